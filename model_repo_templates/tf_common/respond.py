"""Sending a response from a model's own thread so that the stub never frees Python objects without the GIL.

The Python backend's stub (Triton 2.51; https://github.com/triton-inference-server/python_backend,
src/response_sender.cc, `ResponseSender::Send`) releases the GIL and then drops the outputs the requester did
not ask for (`InferResponse::PruneOutputTensors`). When the response holds the only reference to such a
tensor, its numpy array is freed right there, without the GIL; pymalloc's state gets corrupted and the stub
segfaults a little later in whichever thread allocates next (an engine thread in torch, say). An ensemble step
or a BLS call asks for a subset of a model's outputs, so a streaming model can do this on every token.
`send` keeps the response's tensors referenced until the stub is done, so the last reference is dropped by the
model, with the GIL.
"""


def send(sender, response=None, flags=0):
    """`sender.send(response, flags=flags)`, with `response`'s tensors referenced until it returns."""
    held = response.output_tensors() if response is not None else None
    sender.send(response, flags=flags)
    del held  # the tensors the stub pruned are released here, under the GIL
