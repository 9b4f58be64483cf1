"""tritonforge.model_repo_templates.tf_common: request plumbing the Triton Python models share (copied into
model dirs as ``tf_common``).

- ``inputs``: a request's optional input tensors, scalars and string lists (`RequestInputs`).
- ``word_list``: TensorRT-LLM stop/bad word lists ([2, N]: ids; cumulative end offsets), built and parsed.
- ``inflight``: the engine models' requests in flight: the per-request start loop, error responses, live
  requests by Triton request id (for `stop`) and the cancellation watcher (`InFlight`, `Replies`).

Nothing here imports ``triton_python_backend_utils``: a model passes its ``pb_utils`` in, so the helpers run
(and are tested) outside Triton too. Only the standard library and numpy are imported. Nothing is imported here,
so a model vendors only the modules it uses.
"""
