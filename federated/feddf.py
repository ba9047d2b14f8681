"""FedDF: ensemble distillation for model fusion (Lin et al., NeurIPS 2020), one-shot.

The server starts the student from the FedAvg of the client models and distils the
equal-weight logit ensemble into it on *unlabeled* server data (here: a held-out slice of
the training distribution, ``FLData.x_server``), minimising ``KL(σ(T(x)/τ) ‖ σ(S(x)/τ))``
with Adam (FedDF §3, Algorithm 1; fixed step count instead of early stopping).
"""

from __future__ import annotations

import torch

from headscope.common import HeadscopeError, progress

from .distill import kl_teacher_student
from .ensemble import WeightedEnsemble
from .fedavg import average_states
from .protocol import FLConfig, ServerEnv, ServerProgram, ServerResult, build_model, train_all_clients


def server(cfg: FLConfig, env: ServerEnv) -> ServerProgram:
    """Server program: collect client models, distil their ensemble on unlabeled server data."""
    if len(env.x_server) == 0:
        raise HeadscopeError("FedDF needs unlabeled data on the server; the server pool is empty")
    models, sizes = yield from train_all_clients(cfg, env)
    teacher = WeightedEnsemble(models).eval()
    student = build_model(cfg, env.input_shape, env.num_classes)
    student.load_state_dict(average_states([m.state_dict() for m in models], sizes))
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(cfg.seed * 31 + 5)
    xs = env.x_server
    bs = min(cfg.synth_batch, len(xs))
    student.train()
    for _ in progress(range(cfg.feddf_steps), desc="feddf distil"):
        idx = torch.randint(len(xs), (bs,), generator=g)
        x = xs[idx]
        with torch.no_grad():
            t = teacher(x)
        loss = kl_teacher_student(student(x), t, 1.0).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ServerResult(student.eval())
