"""Export: tagpipe models as Hugging Face token-classification folders or ONNX graphs (``tagpipe export``)."""
