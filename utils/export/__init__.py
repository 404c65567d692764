"""TF.js model or trained checkpoint -> hand_inference_graph/ (frozen graph, SavedModel, TFLite)."""
