"""tritonforge: TensorRT-LLM engines and Triton model repositories from one deployment spec."""

__version__ = "0.1.0"
