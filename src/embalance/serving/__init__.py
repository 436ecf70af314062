"""The torch-free runtime that serves an exported model (ONNX Runtime + tokenizers)."""
