"""The trainable SSD (the pretrained network in Keras), its input pipeline and the training loop."""
