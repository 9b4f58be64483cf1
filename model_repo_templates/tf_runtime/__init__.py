"""tritonforge.model_repo_templates.tf_runtime: the CPU reference runtime (copied into Triton model dirs as ``tf_runtime``).

- ``detok``: incremental detokenization (id -> bytes table; complete UTF-8 characters only).
- ``engine``: ``CpuEngine``, the in-flight batching stand-in for a TensorRT-LLM engine
  (``model_runner``: batched forward over a slot KV cache; ``kv``: slots and prefix blocks;
  ``sampling``: TensorRT-LLM sampling semantics).

Modules import only the standard library, numpy, torch and transformers, and each other relatively,
so that the package works verbatim inside a stock Triton container. Nothing heavy is imported here.
"""
