"""tritonforge.model_repo_templates."""
