"""Sparse head-level (and layer-level) steering: vectors, projections and Gaussian transport.

Every intervention is a :class:`headscope.model.Patch` subclass (:class:`SteerPatch`) that
overrides ``apply(x)``, so it runs identically through ``model.run_patched``,
``model.hooked(...)`` and ``model.generate(..., patches=...)`` on both backends.

Kinds (per selected head, ``x`` is that head's ``z`` vector, or the residual stream for
``site="resid_pre"``):

- ``"add"``: ``x + α·v``. ITI's mean shift (Li et al. 2023, §3.2) uses ``v = σ·θ`` with
  ``θ`` the unit direction from the undesired to the desired activation mean and ``σ``
  the standard deviation of the activations along ``θ`` (:func:`mean_shift`).
- ``"project_out"``: ``x − α (x·u) u`` (remove the component along the unit vector ``u``).
- ``"project_onto"``: ``x + α((x·u) u − x)`` (keep only the component along ``u``).
- ``"gaussian"``: the closed-form optimal-transport (Monge) map between two Gaussians,
  optionally gated (our addition, documented in docs/sac.md): the map acts only on vectors
  within Mahalanobis radius ``τ`` of the source Gaussian, so prompts far from the
  behaviour's distribution (arithmetic, facts) pass through unchanged;
  ``T(x) = μ_t + A (x − μ_s)``, ``A = Σ_s^{-1/2} (Σ_s^{1/2} Σ_t Σ_s^{1/2})^{1/2} Σ_s^{-1/2}``,
  applied with strength α as ``x + α (T(x) − x)`` (α = 0: identity, α = 1: the full map,
  α > 1 extrapolates). SAC (Xiao et al., NeurIPS 2024, §3.3) models each controlled head's
  activations with Gaussians and moves them from the undesired to the desired one; the
  paper's exact formula is not public, so this is *our* closed form for that step.
  Covariances are shrinkage-regularised with Ledoit–Wolf (``sklearn.covariance.LedoitWolf``).

Position policy: ``"last"`` steers only the newest token (``pos=-1``; greedy generation
without a KV cache re-runs the whole sequence each step, so "last" is the token being
predicted from), ``"all"`` steers every position.

A :class:`Controller` holds one behaviour's per-layer parameters and turns them into
patches; :func:`compose` stacks several controllers (several behaviours' head sets at
once). Layer-level RepE baselines (Zou et al. 2023, §3: PCA of paired differences;
RepE-Mean, RepE-Merge as in SAC §4.1) are controllers on ``resid_pre``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from headscope.common.errors import HeadscopeError
from headscope.model import Patch, Site

KINDS = ("add", "project_out", "project_onto", "gaussian")
POLICIES = ("last", "all")


# ---------------------------------------------------------------------------------------
# Closed forms


def _sym_sqrt(m: Tensor, inverse: bool = False, eps: float = 1e-10) -> Tensor:
    """Symmetric (inverse) square root of an SPD matrix by eigendecomposition."""
    w, v = torch.linalg.eigh((m + m.T) / 2)
    w = w.clamp_min(eps)
    p = w.rsqrt() if inverse else w.sqrt()
    return (v * p) @ v.T


def gaussian_ot(
    mu_s: Float[Tensor, " d"], cov_s: Float[Tensor, "d d"], mu_t: Float[Tensor, " d"], cov_t: Float[Tensor, "d d"]
) -> tuple[Float[Tensor, "d d"], Float[Tensor, " d"]]:
    """The optimal-transport map N(μ_s, Σ_s) → N(μ_t, Σ_t) as ``T(x) = A x + b``.

    ``A = Σ_s^{-1/2} (Σ_s^{1/2} Σ_t Σ_s^{1/2})^{1/2} Σ_s^{-1/2}`` (symmetric positive
    definite), ``b = μ_t − A μ_s``. Computed in float64. Shapes: μ ``[d]``, Σ ``[d, d]``.
    """
    cs, ct = cov_s.double(), cov_t.double()
    if (
        cs.shape != ct.shape
        or cs.ndim != 2
        or cs.shape[0] != cs.shape[1]
        or mu_s.shape != mu_t.shape
        or mu_s.shape[0] != cs.shape[0]
    ):
        raise HeadscopeError(
            f"gaussian_ot needs μ [d] and Σ [d, d] of one size; got μ {tuple(mu_s.shape)}, {tuple(mu_t.shape)} and Σ "
            f"{tuple(cs.shape)}, {tuple(ct.shape)}"
        )
    s_half = _sym_sqrt(cs)
    s_ihalf = _sym_sqrt(cs, inverse=True)
    a = s_ihalf @ _sym_sqrt(s_half @ ct @ s_half) @ s_ihalf
    a = (a + a.T) / 2
    b = mu_t.double() - a @ mu_s.double()
    return a, b


def shrunk_cov(x: Float[Tensor, "n d"]) -> Float[Tensor, "d d"]:
    """Ledoit–Wolf shrinkage covariance of samples ``x [n, d]`` (float64)."""
    if x.ndim != 2 or x.shape[0] < 2:
        raise HeadscopeError(f"need at least 2 samples [n, d] to fit a covariance; got shape {tuple(x.shape)}")
    from sklearn.covariance import LedoitWolf

    return torch.from_numpy(LedoitWolf().fit(x.double().cpu().numpy()).covariance_)


def fit_gaussian(
    src: Float[Tensor, "n d"], tgt: Float[Tensor, "m d"]
) -> tuple[Float[Tensor, "d d"], Float[Tensor, " d"]]:
    """Fit N(μ, Σ) (Ledoit–Wolf) to source and target samples ``[n, d]``; return ``(A, b)`` of the OT map."""
    return gaussian_ot(src.double().mean(0), shrunk_cov(src), tgt.double().mean(0), shrunk_cov(tgt))


def loo_m2(x: Float[Tensor, "n d"]) -> Float[Tensor, " n"]:
    """Leave-one-out squared Mahalanobis distances ``[n]``: each sample's distance under the
    (Ledoit–Wolf) Gaussian fitted to the other samples.

    In-sample distances underestimate how far new samples of the same distribution fall
    when there are few samples per dimension (≈20 samples of a 16-d head here): on the
    ``llama`` organism, held-out preference prompts lay up to 6× beyond the in-sample
    maximum, but within the leave-one-out maximum. No library computes this for a
    shrinkage covariance, so it is a plain loop (n small fits).
    """
    x = x.double()
    n = x.shape[0]
    if n < 3:
        raise HeadscopeError(f"need at least 3 samples for leave-one-out distances; got {n}")
    out = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        rest = torch.cat([x[:i], x[i + 1 :]])
        d = x[i] - rest.mean(0)
        out[i] = d @ torch.linalg.solve(shrunk_cov(rest), d)
    return out


def fit_gate(
    src: Float[Tensor, "n d"],
    tgt: Float[Tensor, "m d"],
    slack: float = 1.0,
    background: Float[Tensor, "b d"] | Sequence[Float[Tensor, "b d"]] | None = None,
    loo: Float[Tensor, " n"] | None = None,
) -> dict[str, Tensor]:
    """Gate parameters for one head.

    - ``mu_s``, ``prec_s``, ``gate``: source mean and precision, and the radius τ = slack ·
      the largest leave-one-out Mahalanobis distance of a source sample (:func:`loo_m2`);
    - with ``background`` (activations ``[m, d]`` of off-target prompts, or a list of such
      groups: other tasks, arithmetic, facts) also ``mu_b [G, d]``, ``prec_b [G, d, d]`` and
      ``logdet [G]`` = log det Σ_s − log det Σ_g: a Gaussian per group, and the gate then
      also requires the input to be more likely under the source Gaussian than under
      every group's (a quadratic-discriminant test, equal priors; one Gaussian per group
      because the off-target activations are multi-modal).

    ``loo``: ``loo_m2(src)`` when the caller already has it. ``tgt`` is unused; kept so
    every fit takes the same arguments.
    """
    mu = src.double().mean(0)
    cov = shrunk_cov(src)
    loo = loo_m2(src) if loo is None else loo
    out = {"mu_s": mu, "prec_s": torch.linalg.inv(cov), "gate": slack * loo.max().sqrt()}
    if background is not None:
        groups = [background] if isinstance(background, Tensor) else list(background)
        covs = [shrunk_cov(g) for g in groups]
        out.update(
            {
                "mu_b": torch.stack([g.double().mean(0) for g in groups]),
                "prec_b": torch.stack([torch.linalg.inv(c) for c in covs]),
                "logdet": torch.stack([torch.logdet(cov) - torch.logdet(c) for c in covs]),
            }
        )
    return out


def mean_shift(src: Float[Tensor, "n d"], tgt: Float[Tensor, "m d"]) -> Float[Tensor, " d"]:
    """ITI's shift vector ``σ·θ``: θ = unit(μ_t − μ_s), σ = std of all samples projected on θ."""
    d = tgt.double().mean(0) - src.double().mean(0)
    theta = d / d.norm().clamp_min(1e-12)
    sigma = (torch.cat([src, tgt]).double() @ theta).std()
    return sigma * theta


def repe_direction(diffs: Float[Tensor, "n d"], reference: Float[Tensor, "m d"] | None = None) -> Float[Tensor, " d"]:
    """RepE reading vector: first principal component of paired differences ``[n, d]``.

    The sign is chosen so that the direction points along the mean difference (or along
    ``reference``). Returned unit-norm (float64).
    """
    d = diffs.double()
    centred = d - d.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    u = vh[0]
    ref = d.mean(0) if reference is None else reference.double()
    return u if float(u @ ref) >= 0 else -u


# ---------------------------------------------------------------------------------------
# The patch


class SteerPatch(Patch):
    """One layer's steering of several heads (or of the residual stream).

    Args:
        layer: block index.
        site: ``"z"`` (per-head) or ``"resid_pre"`` (layer-level).
        heads: head indices (site z); ignored for resid_pre.
        kind: one of :data:`KINDS`.
        params: ``vec [k, d]`` (add, project_*: the vector / direction per head) or
            ``A [k, d, d]`` and ``b [k, d]`` (gaussian).
        alpha: strength.
        policy: ``"last"`` (newest token only) or ``"all"`` (every position).
    """

    def __init__(
        self,
        layer: int,
        site: Site,
        heads: Sequence[int] | None,
        kind: str,
        params: dict[str, Tensor],
        alpha: float,
        policy: str = "last",
    ) -> None:
        if kind not in KINDS:
            raise HeadscopeError(f"unknown steering kind {kind!r}; use one of {KINDS}")
        if policy not in POLICIES:
            raise HeadscopeError(
                f"unknown position policy {policy!r}; use 'last' (newest token) or 'all' (every token)"
            )
        if site not in ("z", "resid_pre"):
            raise HeadscopeError(f"steering acts on site 'z' (heads) or 'resid_pre' (layer); got {site!r}")
        super().__init__(layer=layer, site=site, mode="add", value=0.0, pos=-1 if policy == "last" else None)
        self.heads = list(heads) if (site == "z" and heads is not None) else None
        self.kind, self.alpha, self.policy = kind, float(alpha), policy
        need = ("A", "b") if kind == "gaussian" else ("vec",)
        missing = [k for k in need if k not in params]
        if missing:
            raise HeadscopeError(f"steering kind {kind!r} needs parameters {need}; missing {missing}")
        self.params = {k: v.float() for k, v in params.items()}
        if kind.startswith("project"):
            v = self.params["vec"]
            self.params["vec"] = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        self._cache: dict = {}
        # Gate parameter sets: unprefixed (one gate) and/or "g0.", "g1.", ... (several, OR-ed).
        pres = sorted({k[: -len("gate")] for k in self.params if k == "gate" or k.endswith(".gate")})
        self._gates: list[str] = pres

    def _p(self, name: str, x: Tensor, pre: str = "") -> Tensor:
        key = (pre + name, x.device, x.dtype)
        val = self._cache.get(key)
        if val is None:
            P = self.params
            if name == "AmI_T":
                A = P["A"]
                val = (A - torch.eye(A.shape[-1])).transpose(-1, -2)
            elif name == "heads":
                val = torch.as_tensor(self.heads)
            elif name == "b1":  # [k, 1, d]: broadcast over the flattened batch
                val = P["b"][:, None, :]
            elif name == "mu1":
                val = P[pre + "mu_s"][:, None, :]
            elif name == "mub1":  # [k, G, 1, d]
                val = P[pre + "mu_b"][:, :, None, :]
            elif name == "logdet1":  # [k, G, 1]
                val = P[pre + "logdet"][:, :, None]
            elif name == "gate2":
                val = P[pre + "gate"] ** 2
            else:
                val = P[pre + name]
            val = val.to(device=x.device, dtype=torch.long if name == "heads" else x.dtype)
            self._cache[key] = val
        return val

    def _keep(self, vt: Tensor, pre: str) -> Tensor:
        """The in-distribution gate ``pre`` on ``vt [k, N, d]``: ``[k or 1, N]`` booleans (True = steer)."""
        # Map only vectors within Mahalanobis radius tau of the source Gaussian ...
        dv = vt - self._p("mu1", vt, pre)
        m2 = (torch.bmm(dv, self._p("prec_s", vt, pre)) * dv).sum(-1)  # [k, N]
        g2 = self._p("gate2", vt, pre)
        joint = g2.ndim == 0  # joint gate: summed over this layer's heads
        keep = (m2.sum(0, keepdim=True) if joint else m2) <= (g2 if joint else g2[:, None])
        if pre + "mu_b" in self.params and bool(keep.any()):
            # ... and more likely under the source Gaussian than under every background group's.
            db = vt.unsqueeze(1) - self._p("mub1", vt, pre)  # [k, G, N, d]
            q = m2.unsqueeze(1) - ((db @ self._p("prec_b", vt, pre)) * db).sum(-1) + self._p("logdet1", vt, pre)
            keep = keep & ((q.sum(0, keepdim=True) if joint else q) <= 0).all(1)
        return keep

    def gated(self) -> bool:
        """Whether this patch carries an in-distribution gate (one or several, OR-ed)."""
        return bool(self._gates)

    def transform(self, v: Tensor) -> Tensor:
        """The map on selected vectors ``v [..., k, d]`` (k = heads, or 1 for the residual).

        With gates (:func:`fit_gate`; several are OR-ed: a merged controller steers an
        input that any of its tasks' gates accepts), rows no gate accepts pass unchanged;
        when no row is accepted ``v`` itself is returned.
        """
        keep = None
        if self._gates:
            shape = v.shape
            vt = v.reshape(-1, shape[-2], shape[-1]).transpose(0, 1)  # [k, N, d]
            for pre in self._gates:
                k = self._keep(vt, pre)
                keep = k if keep is None else keep | k
            assert keep is not None
            if not bool(keep.any()):  # nothing in distribution (the usual case off-task): identity, no more work
                return v
            mask = keep.transpose(0, 1).reshape(*shape[:-2], keep.shape[0], 1)  # [..., k or 1, 1]
            return torch.where(mask, self._map(v), v)
        return self._map(v)

    def _map(self, v: Tensor) -> Tensor:
        a = self.alpha
        if self.kind == "add":
            return v + a * self._p("vec", v)
        if self.kind == "project_out":
            u = self._p("vec", v)
            return v - a * (v * u).sum(-1, keepdim=True) * u
        if self.kind == "project_onto":
            u = self._p("vec", v)
            return v + a * ((v * u).sum(-1, keepdim=True) * u - v)
        # Gaussian map, written as few batched ops (it runs at every generated token):
        # per head k, over the flattened batch N: T(x) - x = x (A - I)^T + b.
        shape = v.shape
        vt = v.reshape(-1, shape[-2], shape[-1]).transpose(0, 1)  # [k, N, d]
        step = torch.baddbmm(self._p("b1", v), vt, self._p("AmI_T", v))  # [k, N, d]
        return torch.add(vt, step, alpha=a).transpose(0, 1).reshape(shape)

    def apply(self, x: Tensor) -> Tensor:
        if self.site == "z":
            idx = self._p("heads", x)
            if self.policy == "last":
                sel = x[:, -1].index_select(1, idx)  # [batch, k, d_head]
                new = self.transform(sel)
                if new is sel:  # gated off everywhere: leave the activation as it is
                    return x
                out = x.clone()
                out[:, -1].index_copy_(1, idx, new)
            else:
                sel = x.index_select(2, idx)  # [batch, pos, k, d_head]
                new = self.transform(sel)
                if new is sel:
                    return x
                out = x.clone()
                out.index_copy_(2, idx, new)
        elif self.policy == "last":
            out = x.clone()
            out[:, -1] = self.transform(x[:, -1, None])[:, 0]  # [batch, 1, d_model]
        else:
            out = x.clone()
            out[:] = self.transform(x[:, :, None])[:, :, 0]
        return out


# ---------------------------------------------------------------------------------------
# Controllers


@dataclass
class Controller:
    """One behaviour's steering: per-layer heads and parameters, a kind, a strength, a policy.

    ``layers[L] = {"heads": [h, ...], "vec" | "A","b": Tensor}``; for ``site="resid_pre"``
    ``heads`` is empty and tensors have a leading axis of 1.
    """

    name: str
    kind: str
    layers: dict[int, dict]
    alpha: float = 1.0
    policy: str = "last"
    site: Site = "z"
    meta: dict = field(default_factory=dict)

    def heads(self) -> list[tuple[int, int]]:
        return [(L, h) for L in sorted(self.layers) for h in self.layers[L].get("heads", [])]

    def patches(self, alpha: float | None = None, policy: str | None = None) -> list[SteerPatch]:
        """The controller as patches (optionally with another strength / policy)."""
        a = self.alpha if alpha is None else alpha
        pol = self.policy if policy is None else policy
        out = []
        for L in sorted(self.layers):
            e = self.layers[L]
            params = {k: v for k, v in e.items() if isinstance(v, Tensor)}
            out.append(SteerPatch(L, self.site, e.get("heads"), self.kind, params, a, pol))
        return out

    def with_alpha(self, alpha: float) -> Controller:
        return replace(self, alpha=alpha, meta=dict(self.meta))

    # -- io ------------------------------------------------------------------------
    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``path.safetensors`` (tensors) and ``path.json`` (everything else)."""
        from safetensors.torch import save_file

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        base = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
        tensors = {
            f"L{L}.{k}": v.float().contiguous()
            for L, e in self.layers.items()
            for k, v in e.items()
            if isinstance(v, Tensor)
        }
        st, js = base.with_suffix(".safetensors"), base.with_suffix(".json")
        save_file(tensors, str(st))
        js.write_text(
            json.dumps(
                {
                    "name": self.name,
                    "kind": self.kind,
                    "alpha": self.alpha,
                    "policy": self.policy,
                    "site": self.site,
                    "heads": {str(L): list(e.get("heads", [])) for L, e in self.layers.items()},
                    "meta": self.meta,
                },
                indent=1,
            )
        )
        return st, js

    @classmethod
    def load(cls, path: str | Path) -> Controller:
        from safetensors.torch import load_file

        p = Path(path)
        base = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
        st, js = base.with_suffix(".safetensors"), base.with_suffix(".json")
        if not st.exists() or not js.exists():
            raise HeadscopeError(
                f"controller {base} not found: need both {st.name} and {js.name}; write one with `headscope sac fit`"
            )
        d = json.loads(js.read_text())
        tensors = load_file(str(st))
        layers: dict[int, dict] = {int(L): {"heads": hs} for L, hs in d["heads"].items()}
        for key, v in tensors.items():
            L, name = key.split(".", 1)
            layers[int(L[1:])][name] = v
        return cls(d["name"], d["kind"], layers, d["alpha"], d["policy"], d.get("site", "z"), d.get("meta", {}))


def compose(*controllers: Controller | None) -> list[SteerPatch]:
    """Patches of several controllers at once (several behaviours' head sets)."""
    return [p for c in controllers if c is not None for p in c.patches()]


# ---------------------------------------------------------------------------------------
# Builders from activation samples


def _group(heads: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    by: dict[int, list[int]] = {}
    for L, h in heads:
        by.setdefault(int(L), []).append(int(h))
    return by


def gaussian_controller(
    name: str,
    src: dict[tuple[int, int], Tensor],
    tgt: dict[tuple[int, int], Tensor],
    alpha: float = 1.0,
    policy: str = "last",
    gate: float | None = 1.0,
    background: dict[tuple[int, int], Sequence[Tensor]] | None = None,
) -> Controller:
    """SAC controller: a Gaussian OT map per head from source samples to target samples (``[n, d_head]`` each).

    ``gate``: the slack of the in-distribution gate (:func:`fit_gate`); None = map every input.
    ``background``: per head, off-target activations (a list of ``[m_g, d_head]`` groups)
    for the gate's source-vs-background test (:func:`fit_gate`); None = radius only.
    """
    if not src:
        raise HeadscopeError("no heads selected; pass at least one (layer, head)")
    layers: dict[int, dict] = {}
    for L, hs in _group(list(src)).items():
        As, bs = zip(*(fit_gaussian(src[(L, h)], tgt[(L, h)]) for h in hs))
        layers[L] = {"heads": hs, "A": torch.stack(As).float(), "b": torch.stack(bs).float()}
        if gate is not None:
            layers[L].update(
                layer_gate(
                    [src[(L, h)] for h in hs], gate, None if background is None else [background[(L, h)] for h in hs]
                )
            )
    return Controller(name, "gaussian", layers, alpha, policy)


def layer_gate(
    src: Sequence[Float[Tensor, "n d"]],
    slack: float = 1.0,
    background: Sequence[Sequence[Float[Tensor, "b d"]]] | None = None,
) -> dict[str, Tensor]:
    """One layer's gate over its steered vectors (the heads of a layer, or the one residual stream).

    ``src[i]``: source samples of vector ``i``; ``background[i]``: its off-target groups.
    Per vector the :func:`fit_gate` terms stacked (``mu_s [k, d]``, ``prec_s``, and with
    ``background`` ``mu_b``, ``prec_b``, ``logdet``); ``gate``: the *joint* radius, slack ×
    the square root of the largest summed squared leave-one-out distance of a source
    sample over the vectors (an out-of-sample estimate).
    """
    loos = [loo_m2(x) for x in src]  # n small covariance fits per vector: compute once
    gs = [
        fit_gate(x, x, slack, None if background is None else background[i], loo=lo)
        for i, (x, lo) in enumerate(zip(src, loos))
    ]
    out = {k: torch.stack([g[k] for g in gs]).float() for k in gs[0] if k != "gate"}
    tot = loos[0]
    for lo in loos[1:]:
        tot = tot + lo
    out["gate"] = (slack * tot.max().sqrt()).float().reshape(())
    return out


def with_gate(
    controller: Controller,
    src: Mapping[int, Sequence[Tensor]],
    slack: float = 1.0,
    background: Mapping[int, Sequence[Sequence[Tensor]]] | None = None,
) -> Controller:
    """The same controller (any kind, heads or residual) gated like SAC's maps (:func:`layer_gate`).

    ``src[L]``: per steered vector of layer ``L`` (the layer's heads in order, or the one
    residual stream) its source samples ``[n, d]``; ``background[L]``: per vector its
    off-target groups. Gives ITI's mean shifts and RepE's directions the gate SAC has.
    """
    missing = [L for L in controller.layers if L not in src]
    if missing:
        raise HeadscopeError(f"no source samples for layer(s) {missing} of controller {controller.name!r}")
    layers = {}
    for L, e in controller.layers.items():
        n_vec = len(e.get("heads") or [0])
        if len(src[L]) != n_vec:
            raise HeadscopeError(
                f"layer {L} of {controller.name!r} steers {n_vec} vector(s); got {len(src[L])} sources"
            )
        e2 = {k: v for k, v in e.items() if not _is_gate_key(k)}
        e2.update(layer_gate(src[L], slack, None if background is None else background[L]))
        layers[L] = e2
    return replace(controller, layers=layers, meta=dict(controller.meta))


_GATE_KEYS = ("mu_s", "prec_s", "gate", "mu_b", "prec_b", "logdet")


def _is_gate_key(k: str) -> bool:
    return k.split(".")[-1] in _GATE_KEYS and (k in _GATE_KEYS or k.startswith("g"))


def union_gate(controller: Controller, gated: Sequence[Controller]) -> Controller:
    """``controller`` steering where *any* of ``gated``'s gates accepts (their gates OR-ed, layer by layer).

    For merged baselines (RepE-Mean, RepE-Merge): one shift for every task, applied to
    the inputs one of the tasks' own gates lets through. Every gated controller must
    steer the same vectors in each of ``controller``'s layers.
    """
    layers = {}
    for L, e in controller.layers.items():
        e2 = {k: v for k, v in e.items() if not _is_gate_key(k)}
        for i, g in enumerate(gated):
            ge = g.layers.get(L)
            if ge is None or "gate" not in ge:
                raise HeadscopeError(f"controller {g.name!r} has no gate in layer {L}; gate it with with_gate first")
            if list(ge.get("heads", [])) != list(e.get("heads", [])):
                raise HeadscopeError(f"layer {L}: {g.name!r} gates heads {ge.get('heads')}, not {e.get('heads')}")
            e2.update({f"g{i}.{k}": v for k, v in ge.items() if k in _GATE_KEYS})
        layers[L] = e2
    return replace(controller, layers=layers, meta=dict(controller.meta))


def mean_shift_controller(
    name: str,
    src: dict[tuple[int, int], Tensor],
    tgt: dict[tuple[int, int], Tensor],
    alpha: float = 1.0,
    policy: str = "last",
) -> Controller:
    """ITI controller: ``x + α·σ·θ`` per head."""
    if not src:
        raise HeadscopeError("no heads selected; pass at least one (layer, head)")
    layers = {
        L: {"heads": hs, "vec": torch.stack([mean_shift(src[(L, h)], tgt[(L, h)]) for h in hs]).float()}
        for L, hs in _group(list(src)).items()
    }
    return Controller(name, "add", layers, alpha, policy)


def repe_controller(
    name: str, directions: dict[int, Tensor], scales: dict[int, float], alpha: float = 1.0, policy: str = "last"
) -> Controller:
    """Layer-level RepE controller on ``resid_pre``: ``x + α·s_L·u_L`` (u unit, s the std along u)."""
    layers = {
        int(L): {"heads": [], "vec": (float(scales[L]) * directions[L].double())[None].float()} for L in directions
    }
    return Controller(name, "add", layers, alpha, policy, site="resid_pre")
