"""The engine's choices as plain data, for command lines and parameters that must not load torch."""

MODES = ("whole", "slide")  # one pass over the resized image; the paper's 448/224 sliding windows
DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "laion2b_s34b_b88k"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # of the encoder and heads; see model.precision
# What runs the per-frame graph: PyTorch eager, or ONNX Runtime on an export made per input size (fp32)
BACKENDS = ("torch", "onnxruntime")
