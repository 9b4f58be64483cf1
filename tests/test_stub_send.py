"""`tf_common.respond.send` keeps a response's tensors alive while the stub prunes the unrequested ones.

The sender here does what Triton 2.51's stub does in `ResponseSender::Send`
(https://github.com/triton-inference-server/python_backend, src/response_sender.cc): it drops the response's
references to the outputs the requester did not ask for. Any tensor that dies at that moment would, in the
real stub, be freed without the GIL (scripts/stub_crash_repro.py shows the segfault that follows).
"""

from __future__ import annotations

import weakref

import numpy as np

from tests.helpers import fake_pb_utils as pb
from tritonforge.model_repo_templates.tf_common.respond import send


class PruningSender:
    """A response sender that prunes like the stub and records which tensors died while it did."""

    def __init__(self, requested: set[str]) -> None:
        self.requested = requested
        self.died: list[str] = []
        self.sent: list[tuple[list[str], int]] = []

    def send(self, response: pb.InferenceResponse | None = None, flags: int = 0) -> None:
        if response is not None:
            refs = [(t.name(), weakref.ref(t)) for t in response.output_tensors()]
            response._tensors = [t for t in response._tensors if t.name() in self.requested]
            self.died += [name for name, ref in refs if ref() is None]
            self.sent.append(([t.name() for t in response.output_tensors()], flags))
        else:
            self.sent.append(([], flags))


def _response(k: int) -> pb.InferenceResponse:
    """Built inline, as the models build theirs: the response is the tensors' only owner."""
    return pb.InferenceResponse(
        output_tensors=[
            pb.Tensor("output_ids", np.array([[[k]]], dtype=np.int32)),
            pb.Tensor("num_output_tokens", np.array([[1]], dtype=np.int32)),
            pb.Tensor("cum_log_probs", np.array([[0.5]], dtype=np.float32)),
        ]
    )


def test_a_plain_send_lets_the_pruned_tensors_die_inside_the_stub() -> None:
    sender = PruningSender({"output_ids"})
    sender.send(_response(1), flags=0)  # what the models do today
    assert sender.died == ["num_output_tokens", "cum_log_probs"]


def test_respond_send_keeps_them_alive_until_send_returns() -> None:
    sender = PruningSender({"output_ids"})
    send(sender, _response(1))
    send(sender, _response(2), flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    assert sender.died == []
    assert sender.sent == [(["output_ids"], 0), (["output_ids"], pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)]


def test_a_bare_final_flag_goes_through() -> None:
    sender = PruningSender({"output_ids"})
    send(sender, flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    assert sender.sent == [([], pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)]
