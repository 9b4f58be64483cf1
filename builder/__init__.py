"""tritonforge.builder."""
