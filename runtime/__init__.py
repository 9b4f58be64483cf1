"""tritonforge.runtime."""
