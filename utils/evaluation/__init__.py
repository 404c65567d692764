"""COCO metrics (pycocotools) of any exported model on labelled images."""
