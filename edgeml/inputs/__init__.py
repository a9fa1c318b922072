"""What goes in: models, data, input specs, the ONNX export."""
