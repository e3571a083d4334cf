"""The LitServe API of ``sarm serve``: each inference worker loads the reward model once and scores the dynamic
batches LitServe gathers (up to ``max_batch_size`` requests, waiting at most ``batch_timeout`` seconds for them).

Requests arrive checked (``sarm.serve.middleware``), so nothing here refuses one. An exception while scoring a batch
is LitServe's to answer: a 500 for the requests of that batch only; the worker goes on with the next batch.
"""

from __future__ import annotations

import litserve as ls

from sarm.serve.scoring import score_payloads

ROUTE = "/_sarm/batch"  # the LitServe route; clients call the public paths, forwarded here once checked


class RewardAPI(ls.LitAPI):
    """Scores the payloads of ``sarm.serve.requests`` with ``RewardModel``; picklable until ``setup`` (LitServe
    starts its workers with spawn)."""

    def __init__(
        self, model: str, batch_size: int, normalize: bool, max_batch_size: int, batch_timeout: float, threads: int
    ):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=ROUTE)
        self.model_dir, self.batch_size, self.normalize, self.threads = model, batch_size, normalize, threads

    def setup(self, device):
        import torch

        from sarm.reward.inference import RewardModel

        if device == "cpu":  # CPU workers share the cores instead of each starting one thread per core
            torch.set_num_threads(self.threads)
        self.model = RewardModel.load(self.model_dir, device=device)

    def decode_request(self, request):
        return request

    def batch(self, inputs):
        return list(inputs)

    def predict(self, x):
        if self.max_batch_size == 1:  # LitServe hands an unbatched worker one payload, not a list
            return score_payloads(self.model, [x], self.batch_size, self.normalize)[0]
        return score_payloads(self.model, x, self.batch_size, self.normalize)

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return output
