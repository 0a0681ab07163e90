"""What every sharpness-aware method shares: the passes, perturb/restore, BN, DDP, AMP, clipping.

A subclass only says what happens between the passes (``_sharpness_step``); this class runs a pass,
saves and restores the weights, freezes BatchNorm statistics, synchronises the final update ``d``
across data-parallel workers, unscales it, clips it and hands it to the base optimizer.

Closure convention (the trainer's closure follows it)::

    def closure():
        loss = loss_fn(model(x), y)          # autocast inside if wanted
        if torch.is_grad_enabled():          # False during XSAM's forward-only probes
            opt.backward(loss)               # = loss.backward(), scaled when a GradScaler is given
        return loss

The optimizer zeroes the gradients before every pass, so a closure may loop over micro-batches and
accumulate (``loss / n_micro``) and get the step of the big batch; it runs the i-th micro-batch's forward and
backward under ``opt.micro_batch(i)``, so that BatchNorm's running statistics are updated once per step whatever
the number of micro-batches (``micro_batch`` says why).

Perturbation groups (m-sharpness, Foret et al. 2021 Sec. 4.1): ``step([closure_1, ..., closure_G])``
takes one closure per group of m images. Each group runs its own passes and perturbation and
forms its own update d_g; the base optimizer gets d = (1/G) sum_g d_g, averaged over ranks too.
``step(closure)`` is one group, the whole batch.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from .comm import all_reduce_mean_, world_size
from .schedule import rho_from_lr

Closure = Callable[[], torch.Tensor]
TENSOR_STATS = ("loss", "perturbed_loss", "grad_norm", "perturbed_grad_norm", "cos")  # averaged over groups


@dataclasses.dataclass
class StepStats:
    """Diagnostics of one step. Tensors stay on the device (no host sync) until ``as_dict``.

    With G perturbation groups, loss, perturbed_loss, grad_norm, perturbed_grad_norm and cos are the
    means over the groups of each group's value (the process's own groups; no communication), so
    surrogate_gap and sharpness are the mean gap and its 2h/rho^2; update_norm is ||d|| of the
    averaged update; alpha and searched are group 0's (XSAM searches there only).
    """

    loss: torch.Tensor  # f(w), the clean loss
    perturbed_loss: torch.Tensor  # f_p(w) = f(w_adv)
    surrogate_gap: torch.Tensor  # h = f_p - f (Eq. 4)
    sharpness: torch.Tensor  # 2h / rho^2, the estimate of sigma_max (Lemma 3.3)
    grad_norm: torch.Tensor  # ||g||, unscaled
    perturbed_grad_norm: torch.Tensor  # ||g_p|| (XSAM: ||g_k||), unscaled
    cos: torch.Tensor  # cos(g, g_p) (XSAM: cos phi between v0 and v1)
    update_norm: torch.Tensor  # ||d|| after synchronisation and unscaling, before clipping
    rho: float
    alpha: float
    skipped: bool = False  # a non-finite update: nothing was changed
    searched: bool = False  # XSAM searched alpha* in this step

    def as_dict(self) -> dict[str, float]:
        return {k: (v.item() if isinstance(v, torch.Tensor) else float(v))
                for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class StepClock:
    """What a training loop tells the method before each step (``before_step``): the lr of the step, the
    schedule's range and the loop's counters. ``head(n)``, when the loop offers it, is a closure over the first
    ``n`` images of the step's global batch (None: all of it), the same images on every rank."""

    lr: float
    lr_max: float
    lr_min: float
    step: int = 0  # optimisation steps done before this one (taken and skipped)
    epoch: int = 0
    batch_in_epoch: int = 0
    head: Callable[[int | None], Callable] | None = None


def _flat(t: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """1-D view of ``t`` in the element order of its logical shape; channels_last stays a view."""
    like = t if like is None else like
    if t.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return t.permute(0, 2, 3, 1).reshape(-1)
    return t.reshape(-1)


def _params_of(params: Iterable) -> list[torch.Tensor]:
    out = []
    for p in params:
        out.extend(p["params"] if isinstance(p, dict) else [p])
    return out


def _check_nonneg(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


class NonNegative:
    """A hyper-parameter that must be a number >= 0, checked at every assignment (``opt.rho = 0.03``
    between steps included): a ValueError names it."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj, value: float) -> None:
        obj.__dict__[self.name] = _check_nonneg(self.name, value)


class SharpnessAware(torch.optim.Optimizer):
    """Base class of SAM, GSAM and XSAM.

    Args:
        params: the parameters (or groups) the base optimizer was built over; must be the same set.
        base_optimizer: any ``torch.optim.Optimizer`` (SGD, AdamW, ...). It receives the final
            update ``d`` as the gradient and adds weight decay, momentum etc. itself, so those never
            enter ``g``, ``g_p`` or the decomposition.
        rho: perturbation radius rho_max; the radius of the steps until ``before_step`` sets rho_t.
        rho_min: the radius at the schedule's lr_min (None: rho, a constant radius). ``before_step`` ties
            rho_t to the lr between the two (Algorithm 1, step 0; big_vision's gsam_gradient).
        model: optional; how BatchNorm layers (their running statistics are updated by the clean
            pass only) and a ``DistributedDataParallel`` wrapper are found.
        sync_perturbation: False (default) perturbs each worker with its own gradient (m-sharpness,
            as the GSAM paper and big_vision) and all-reduces only ``d``, once per step. True
            averages the gradient of every pass, which equals one process on the whole batch.
        max_grad_norm: clip the global norm of the final, synchronised, unscaled ``d``.
        grad_scaler: a ``torch.amp.GradScaler`` for fp16; the closure scales through
            ``opt.backward(loss)``; the optimizer unscales, skips non-finite steps and updates it.
        eps: the epsilon of every normalisation (1e-12 as in the reference codes).
    """

    def __init__(self, params, base_optimizer: torch.optim.Optimizer, *, rho: float, rho_min: float | None = None,
                 model: torch.nn.Module | None = None, sync_perturbation: bool = False,
                 max_grad_norm: float | None = None, grad_scaler=None, eps: float = 1e-12,
                 bucket_cap_mb: float = 25.0):
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise ValueError(f"base_optimizer must be a torch.optim.Optimizer, got {type(base_optimizer)}")
        params = _params_of(params)
        base_params = _params_of(base_optimizer.param_groups)
        if {id(p) for p in params} != {id(p) for p in base_params} or len(params) != len(base_params):
            raise ValueError("base_optimizer must be built over exactly the parameters passed as params "
                             f"(params has {len(params)} tensors, base_optimizer has {len(base_params)})")
        if max_grad_norm is not None:
            _check_nonneg("max_grad_norm", max_grad_norm)
        super().__init__(params, defaults={})
        # One set of groups: lr schedulers may act on this optimizer or on the base one.
        self.base_optimizer = base_optimizer
        self.param_groups = base_optimizer.param_groups
        self.rho = self.rho_max = rho
        self.rho_min = rho if rho_min is None else rho_min
        if self.rho_min > self.rho_max:
            raise ValueError(f"need rho_min <= rho, got rho_min={rho_min}, rho={rho}")
        self.model = model
        self.sync_perturbation = bool(sync_perturbation)
        self.max_grad_norm = max_grad_norm
        self.grad_scaler = grad_scaler if grad_scaler is not None and grad_scaler.is_enabled() else None
        self.eps = float(eps)
        self.bucket_bytes = int(bucket_cap_mb * 2**20)
        self._ddp = model if isinstance(model, DistributedDataParallel) else None
        net = model.module if self._ddp is not None else model
        self._bn = [m for m in net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats] if net else []
        self._buffers: dict[str, dict[torch.Tensor, torch.Tensor]] = {}
        self.steps_taken = 0
        self.steps_skipped = 0
        self._group = 0  # index of the perturbation group whose passes are running
        # passes every rank runs alike on the same images (XSAM's search): no gradient synchronisation
        self._same_on_every_rank = False

    # ----------------------------------------------------------------- settable hyper-parameters
    rho = NonNegative()
    rho_max = NonNegative()
    rho_min = NonNegative()
    perturbs = True  # False: one pass at w, nothing to perturb (perturbation groups would change nothing)

    def before_step(self, clock: StepClock) -> None:
        """The loop's one call before each step: rho_t from the lr of the same step, between rho_min and
        rho_max (Algorithm 1, step 0; Eq. 6's radius). A method with a schedule of its own extends it."""
        self.rho = rho_from_lr(clock.lr, lr_max=clock.lr_max, lr_min=clock.lr_min, rho_max=self.rho_max,
                               rho_min=self.rho_min)

    @property
    def alpha(self) -> float:
        """No ascent along g_perp (SAM, vanilla); GSAM and XSAM make it settable."""
        return 0.0

    # ------------------------------------------------------------------------------- the passes
    def loss_term(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        """A term the closure adds to the loss of the forward that gave ``logits`` on ``x`` (MESA's
        trajectory loss); None for the methods that change the step, not the loss."""
        return None

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, through the GradScaler when one is in use (for closures)."""
        (self.grad_scaler.scale(loss) if self.grad_scaler is not None else loss).backward()

    def _comm_context(self):
        if self._ddp is not None and (not self.sync_perturbation or self._same_on_every_rank):
            return self._ddp.no_sync()
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _bn_frozen(self):
        """BatchNorm normalises with the batch statistics but leaves its running statistics alone.

        ``track_running_stats=False`` in train mode does exactly that (no update, no
        ``num_batches_tracked`` increment). Unlike the reference codes' momentum=0 it also cannot
        write NaN into the running statistics when a perturbed pass overflows. Nests: each layer gets
        back the setting it had (a micro-batch's freeze inside a frozen pass leaves the pass frozen).
        """
        before = [m.track_running_stats for m in self._bn]
        for m in self._bn:
            m.track_running_stats = False
        try:
            yield
        finally:
            for m, tracked in zip(self._bn, before):
                m.track_running_stats = tracked

    def micro_batch(self, index: int):
        """The context of the closure's ``index``-th micro-batch (0-based) within a pass: all but the first run
        with BatchNorm's running statistics frozen.

        With ``_grad_pass`` this updates the running statistics exactly once per step on each process, in every
        method: from the first micro-batch (model.bn_images images) of group 0's clean pass. Once per
        forward instead would update them per_rank / bn_images times per step in vanilla (8 at 256 images per
        GPU in BatchNorm batches of 32, 128 on one GPU), so the moving average's horizon, 1/momentum updates,
        would span fewer steps on fewer GPUs, and differ between vanilla and the methods whose other passes
        are perturbed; evaluation reads these statistics. Once per step per process is what the reference
        trainers do where a process's batch is one forward (timm's and torchvision's train loops; the official
        GSAM and SAM codes, whose perturbed pass runs at momentum 0; big_vision's ViTs have no BatchNorm), and
        it costs nothing: every forward still normalises with its own batch statistics, only the moving
        average skips them."""
        return self._bn_frozen() if index > 0 and self._bn else contextlib.nullcontext()

    def _grad_pass(self, closure: Closure, *, clean: bool) -> torch.Tensor:
        """Zero the grads, run forward+backward. BN statistics are updated once per step, by the clean
        pass of group 0 (its first micro-batch: ``micro_batch``): every clean pass runs at the same w, so one
        group's m images are as good a sample as another's, and group 0 is the one a single-closure step has:
        one group is the ungrouped step."""
        self.base_optimizer.zero_grad(set_to_none=True)
        updates_bn = clean and self._group == 0
        with torch.enable_grad(), self._comm_context(), (contextlib.nullcontext() if updates_bn else self._bn_frozen()):
            loss = closure()
        if not isinstance(loss, torch.Tensor):
            raise ValueError(f"closure must return the loss tensor, got {type(loss)}")
        if self.sync_perturbation and not self._same_on_every_rank and self._ddp is None and world_size() > 1:
            all_reduce_mean_([p.grad for p in self._params() if p.grad is not None], self.bucket_bytes)
        return loss.detach().float()

    def _probe(self, closure: Closure) -> torch.Tensor:
        """Forward only (``torch.no_grad``), BN statistics frozen: XSAM's probe losses."""
        with torch.no_grad(), self._comm_context(), self._bn_frozen():
            loss = closure()
        return loss.detach().float()

    # ------------------------------------------------------------------------- vector helpers
    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _active(self) -> list[torch.Tensor]:
        """Parameters that got a gradient in the clean pass; all others are never touched."""
        return [p for p in self._params() if p.grad is not None]

    @staticmethod
    def _grads(ps: list[torch.Tensor]) -> list[torch.Tensor]:
        for p in ps:  # a parameter the later pass did not reach has a zero gradient there
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return [p.grad for p in ps]

    def _take_grads(self, ps: list[torch.Tensor], buffer: str = "kept_grad") -> list[torch.Tensor]:
        """Keep this pass's gradients for later in the step, without a copy.

        The parameters let go of them (grad = None) and the next pass allocates fresh ones, so the
        step holds one extra parameter-sized set of tensors only while it needs it. DDP with
        ``gradient_as_bucket_view=True`` hands out views into buckets that its next backward
        overwrites: those are copied into a persistent buffer instead.
        """
        grads = self._grads(ps)
        if self._ddp is not None and getattr(self._ddp, "gradient_as_bucket_view", False):
            kept = self._buffer(buffer, ps)
            torch._foreach_copy_(kept, grads)
            return kept
        for p in ps:
            p.grad = None
        return grads

    def _buffer(self, name: str, ps: list[torch.Tensor]) -> list[torch.Tensor]:
        """A parameter-sized buffer per parameter, allocated once and reused every step."""
        store = self._buffers.setdefault(name, {})
        return [store[p] if p in store else store.setdefault(p, torch.empty_like(p)) for p in ps]

    @staticmethod
    def _acc_dtype(ts: list[torch.Tensor]) -> torch.dtype:
        return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32

    @staticmethod
    def _norm(ts: list[torch.Tensor]) -> torch.Tensor:
        """Global L2 norm, in float64 when any tensor is float64, else float32."""
        acc = SharpnessAware._acc_dtype(ts)
        return torch.linalg.vector_norm(torch.stack([n.to(acc) for n in torch._foreach_norm(ts)]))

    @staticmethod
    def _dot(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> torch.Tensor:
        """Global <x, y>: one BLAS dot per tensor on flat views, no temporaries in the common case."""
        acc = SharpnessAware._acc_dtype(xs)
        return torch.stack([torch.dot(_flat(x).to(acc), _flat(y, like=x).to(acc)) for x, y in zip(xs, ys)]).sum()

    @staticmethod
    def _tiny(t: torch.Tensor) -> float:
        return torch.finfo(t.dtype).tiny

    def _unscale(self, value: torch.Tensor) -> torch.Tensor:
        """A gradient norm in loss units: divide out the GradScaler's current scale."""
        if self.grad_scaler is None:
            return value
        return value / self.grad_scaler._get_scale_async().to(value.dtype)

    def _save_weights(self, ps: list[torch.Tensor]) -> list[torch.Tensor]:
        saved = self._buffer("weights", ps)
        torch._foreach_copy_(saved, ps)
        return saved

    def _restore_weights(self, ps: list[torch.Tensor]) -> None:
        """Back to w from the saved copy, bit for bit (not w_adv - e)."""
        torch._foreach_copy_(ps, self._buffer("weights", ps))

    def _perturb(self, ps: list[torch.Tensor], g: list[torch.Tensor], rho: float, adaptive: bool) -> torch.Tensor:
        """w <- w + e with e = rho g/(||g||+eps), or ASAM's rho w^2 g/(|| |w| g ||+eps). Returns ||g||."""
        grad_norm = self._norm(g)
        if adaptive:
            wg = torch._foreach_mul(g, ps)  # |w| g up to sign, enough for its norm
            scale = rho / (self._norm(wg) + self.eps)
            torch._foreach_mul_(wg, ps)  # w^2 g
            self._add_scaled_(ps, wg, scale)
        else:
            self._add_scaled_(ps, g, rho / (grad_norm + self.eps))
        return grad_norm

    @staticmethod
    def _add_scaled_(xs: list[torch.Tensor], ys: list[torch.Tensor], scale: torch.Tensor) -> None:
        """xs += scale * ys for a 0-dim tensor ``scale``, in one pass and without a host sync."""
        torch._foreach_addcmul_(xs, ys, [scale] * len(xs))

    # ------------------------------------------------------------------------------- the step
    def _sharpness_step(self, closure: Closure) -> tuple[list[torch.Tensor], dict]:
        """Run the passes, leave ``d`` in ``p.grad`` of the returned active parameters and the
        weights restored; return (active params, fields of StepStats)."""
        raise NotImplementedError

    def _on_skip(self) -> None:
        """Undo a subclass's bookkeeping of a step that turned out non-finite."""

    def _reduced_with_d(self) -> list[torch.Tensor]:
        """State this step built from the process's own groups, averaged over the ranks by the same all-reduce
        as d (per-worker perturbation), so that it is the same on every rank: LookSAM's g_v."""
        return []

    def _after_mean(self, active: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """``grads`` (of ``active``) now hold the step's d averaged over every group of every rank, still in the
        loss scale's units: a method may add a term that must see the whole step (LookSAM's reuse)."""

    @staticmethod
    def _closures(closure) -> list[Closure]:
        """``closure`` or ``[closure_1, ..., closure_G]`` -> the list of per-group closures."""
        closures = list(closure) if isinstance(closure, (list, tuple)) else [closure]
        if not closures or not all(callable(c) for c in closures):
            raise ValueError("step needs a closure, or a non-empty list of closures (one per perturbation "
                             "group): the optimizer runs the forward/backward passes itself")
        return closures

    def _grouped_step(self, closures: list[Closure]) -> tuple[list[torch.Tensor], dict]:
        """d = (1/G) sum_g d_g, each d_g from ``_sharpness_step`` on group g alone; one group is
        ``_sharpness_step`` itself, untouched. The running sum is the one extra parameter-sized
        buffer: group 0's d tensors, taken from the parameters (copied only for DDP bucket views)."""
        if len(closures) == 1:
            return self._sharpness_step(closures[0])
        total: dict[torch.Tensor, torch.Tensor] = {}
        per_group = []
        try:
            for self._group, closure in enumerate(closures):
                active, fields = self._sharpness_step(closure)
                per_group.append(fields)
                old = [p for p in active if p in total]  # a parameter one group did not reach adds zero
                if old:
                    torch._foreach_add_([total[p] for p in old], [p.grad for p in old])
                new = [p for p in active if p not in total]
                total.update(zip(new, self._take_grads(new, buffer="d_sum")))
        finally:
            self._group = 0
        active = [p for p in self._params() if p in total]
        for p in active:
            p.grad = total[p]
        torch._foreach_div_([p.grad for p in active], len(closures))
        means = {k: torch.stack([f[k] for f in per_group]).mean(0) for k in TENSOR_STATS}
        return active, {**per_group[0], **means}

    @torch.no_grad()
    def step(self, closure) -> StepStats:  # type: ignore[override]
        """One sharpness-aware step: ``step(closure)``, or ``step([closure_1, ..., closure_G])`` with one
        closure per perturbation group. The closures are called by the optimizer, every pass."""
        closures = self._closures(closure)
        bn_saved = [b for m in self._bn for b in (m.running_mean, m.running_var, m.num_batches_tracked)]
        bn_copy = [b.clone() for b in bn_saved]
        active, fields = self._grouped_step(closures)
        in_active = set(active)
        for p in self._params():
            if p not in in_active:
                p.grad = None  # so the base optimizer (weight decay, momentum) leaves it alone
        grads = [p.grad for p in active]
        if not self.sync_perturbation:
            all_reduce_mean_(grads + self._reduced_with_d(), self.bucket_bytes)
        self._after_mean(active, grads)
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.base_optimizer)
        update_norm = self._norm(grads) if grads else torch.zeros(())
        if self.max_grad_norm is not None and grads:
            coef = (self.max_grad_norm / (update_norm + 1e-6)).clamp(max=1.0)
            torch._foreach_mul_(grads, coef)
        skipped = not bool(torch.isfinite(update_norm))
        if not skipped:
            if self.grad_scaler is not None:
                self.grad_scaler.step(self.base_optimizer)
            else:
                self.base_optimizer.step()
            self.steps_taken += 1
        else:
            if bn_saved:  # the clean pass may have written NaN into the running statistics
                torch._foreach_copy_(bn_saved, bn_copy)
            self.steps_skipped += 1
            self._on_skip()
        if self.grad_scaler is not None:
            self.grad_scaler.update()
        gap = fields["perturbed_loss"] - fields["loss"]
        return StepStats(surrogate_gap=gap, sharpness=2 * gap / max(self.rho, self.eps) ** 2,
                         update_norm=update_norm, rho=self.rho, skipped=skipped, **fields)

    # ---------------------------------------------------------------------------- checkpoints
    def _extra_state(self) -> dict:
        return {"rho": self.rho, "steps_taken": self.steps_taken, "steps_skipped": self.steps_skipped}

    def _load_extra_state(self, state: dict) -> None:
        self.rho = state["rho"]
        self.steps_taken = state["steps_taken"]
        self.steps_skipped = state["steps_skipped"]

    def state_dict(self) -> dict:  # type: ignore[override]
        """The base optimizer's state (momentum, Adam moments) plus this method's own."""
        return {"base_optimizer": self.base_optimizer.state_dict(), "sharpness": self._extra_state()}

    def load_state_dict(self, state_dict: dict) -> None:  # type: ignore[override]
        if set(state_dict) != {"base_optimizer", "sharpness"}:
            raise ValueError("state_dict is not from a gsam optimizer: expected keys "
                             f"'base_optimizer' and 'sharpness', got {sorted(state_dict)}")
        self.base_optimizer.load_state_dict(state_dict["base_optimizer"])
        self.param_groups = self.base_optimizer.param_groups  # the base rebuilt its group list
        self._load_extra_state(state_dict["sharpness"])
