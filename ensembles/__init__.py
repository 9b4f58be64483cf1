"""tritonforge.ensembles."""
