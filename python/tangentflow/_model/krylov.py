"""The operator backend of the kernel model: a train kernel known only through products
(``tangentflow.operators``) and the Krylov engine that predicts from it (docs/numerics.md
§15, docs/architecture.md "Kernel operators").

``OperatorModel`` is a ``KernelModel`` whose kernel is an ``Operator``: nothing is stored
or factorized; memory is ``O(N·k)`` for a basis of ``k = m·R`` columns, never ``N²``. The
engine (``outputs``, ``train_loss``) solves the MSE gradient flow on ``A = K + λI`` with
``s = η t / n``:

- finite times: one block Lanczos basis per residual ``r₀ = f₀ − Y`` (the core keeps it),
  shared by every time, every learning rate (a rescaling of ``s``) and every ``diag_reg``
  (``T + λI`` on the same basis) of a ``with_params`` family; the error bound is checked
  again for new parameters and the basis extended only when it no longer meets ``rtol``;
- ``t = ∞``: the Nyström-preconditioned pseudo-inverse solve, cached per ``(r₀, λ)``;
- test outputs: one product of the test operator with the new columns of the basis (and
  the ``t = ∞`` solution) per call, none for the columns a ``TestSet`` has seen.
"""

from __future__ import annotations

import hashlib
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _validate
from .._backends import host
from .._backends import krylov as kb
from .._errors import NumericalWarning, warn
from .._shapes import Layout
from .kernel import KernelModel
from .options import Options

if TYPE_CHECKING:
    from ..operators import Operator
    from .test_inputs import TestInputs

__all__ = [
    "OperatorModel",
    "SolverInfo",
    "is_operator",
    "outputs",
    "train_loss",
    "DEFAULT_MAX_ITER",
]

#: Default iteration cap (block iterations of one basis; ``max_iter`` overrides it).
DEFAULT_MAX_ITER = 1000
#: Nyström sketch size of the ``t = ∞`` preconditioner. Larger sketches did not cut the
#: iterations further on the ReLU NTK at N = 8000 (37 block iterations at ranks 50, 100,
#: 200 and 400, 43 at rank 20) nor on the constructed spectra of tests/test_krylov.py, so
#: columns beyond 50 were pure cost (docs/scale.md).
NYSTROM_RANK = 50
#: ``progress=None``: a bar appears once a solve has run this long (on a terminal).
PROGRESS_AFTER_S = 2.0
#: Bases kept per family (one per distinct ``f₀ − Y``).
_MAX_BASES = 2


def is_operator(obj: object) -> bool:
    """Whether ``obj`` is a kernel operator (``tangentflow.operators.is_operator``)."""
    from ..operators import is_operator as check

    return check(obj)


def as_operator(obj: object, name: str) -> Operator:
    from ..operators import as_operator as wrap

    return wrap(obj, name)


@dataclass(frozen=True)
class SolverInfo:
    """What the last Krylov solve did (``Predictor.solver_info``).

    ``method``: ``"block-lanczos"`` (finite times), ``"nystrom-pcg"`` (``t = ∞``), or both
    joined by ``" + "``; ``iterations``: block iterations of the bases used; ``matvecs``:
    columns applied to the train operator by this call (0 when a kept basis sufficed);
    ``error_estimate``: the bound on the train outputs' error at the largest requested
    time, relative to ``max|f₀ − Y|`` (docs/numerics.md §15); ``converged``: whether it
    met ``rtol`` (or the Krylov space became invariant); ``products``: calls of the train
    operator's ``matmat`` by this call (sweeps over the kernel: the finite-time and the
    ``t = ∞`` solves share each sweep when both run)."""

    method: str
    iterations: int
    matvecs: int
    error_estimate: float
    converged: bool
    products: int = 0


class _Progress:
    """A progress bar of a solve (iterations, estimated error): tqdm when installed, else
    a line on stderr. ``enabled=None``: only on a terminal, once the solve has run
    ``PROGRESS_AFTER_S`` seconds."""

    def __init__(self, enabled: bool | None, what: str, rtol: float) -> None:
        self.enabled = enabled
        self.what = what
        self.rtol = rtol
        self.start = time.perf_counter()
        self.bar: Any = None
        self.shown = False

    def _show(self) -> bool:
        if self.enabled is False:
            return False
        if self.enabled is None:
            tty = getattr(sys.stderr, "isatty", None)
            if not (callable(tty) and tty()):
                return False
            if time.perf_counter() - self.start < PROGRESS_AFTER_S:
                return False
        return True

    def __call__(self, iterations: int, matvecs: int, estimate: float) -> None:
        if not self.shown:
            if not self._show():
                return
            self.shown = True
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(desc=self.what, file=sys.stderr, leave=False, unit="it")
        label = f"error {estimate:.2e} (rtol {self.rtol:.0e}), {matvecs} matvecs"
        if self.bar is not None:
            self.bar.n = iterations
            self.bar.set_postfix_str(label, refresh=True)
        else:
            sys.stderr.write(f"\r{self.what}: {iterations} iterations, {label}"[:79].ljust(79))
            sys.stderr.flush()

    def close(self) -> None:
        if not self.shown:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


class KrylovState:
    """The operator and the kept bases of a ``with_params`` family."""

    def __init__(self, op: Operator) -> None:
        self.op = op
        self.flows: dict[bytes, Any] = {}
        self.pinvs: dict[tuple[Any, ...], Any] = {}
        self._trace: float | None = None
        # one call at a time per family: the kept bases are extended in place
        self.lock = threading.RLock()

    def trace(self) -> float | None:
        if self._trace is None:
            d = self.op.diagonal()
            if d is not None:
                self._trace = float(np.sum(d))
        return self._trace

    def remember(self, key: bytes, flow: Any) -> None:
        if key not in self.flows and len(self.flows) >= _MAX_BASES:
            self.flows.pop(next(iter(self.flows)))
        self.flows[key] = flow


def _unsupported(options: Options, name: str) -> None:
    """Options the operator backend does not run, named before any product."""
    if options.loss != "mse":
        raise ValueError(
            f"loss={options.loss!r} needs the kernel as an array: with a kernel operator "
            f'({name}) only loss="mse" is available (Krylov closed forms)'
        )
    if options.dynamics != "flow":
        raise ValueError(
            f"dynamics={options.dynamics!r} needs the kernel as an array: with a kernel "
            f'operator ({name}) only dynamics="flow" is available'
        )
    if options.momentum is not None:
        raise ValueError(
            f"momentum needs the kernel as an array: with a kernel operator ({name}) only "
            "gradient flow without momentum is available"
        )
    if options.precision != "float64":
        raise ValueError(
            f"precision={options.precision!r}: with a kernel operator ({name}) the Krylov "
            'solver runs in float64 (precision="float64")'
        )


class _ArrayTest:
    """A stored ``(M, D)`` test kernel with ``matmat`` (for ``k_test_train`` arrays)."""

    def __init__(self, k: Any) -> None:
        self.k = k
        self.shape = tuple(k.shape)

    def matmat(self, v: Any) -> Any:
        return np.asarray(self.k @ v, dtype=np.float64)


class OperatorModel(KernelModel):
    """A ``KernelModel`` over a kernel operator (the Krylov backend)."""

    is_operator = True
    krylov: KrylovState
    solver_info: SolverInfo | None

    @classmethod
    def from_operator(
        cls,
        k: Any,
        options: Options,
        *,
        name: str = "k_train_train",
        y_train: Any = None,
        check_trace_axes: bool = True,
    ) -> OperatorModel:
        """Validates the operator (2-D, square, float dtype), the options and the targets
        before any product."""
        _unsupported(options, name)
        op = as_operator(k, name)
        n0, n1 = op.shape
        if n0 != n1:
            raise ValueError(f"{name} must be square, got an operator of shape {op.shape}")
        if check_trace_axes and options.trace_axes is not None and len(options.trace_axes):
            pass  # the layout check below names any mismatch
        model = cls(host(), op, name, (n0,), math.nan, np.dtype(op.dtype), options)
        model.krylov = KrylovState(op)
        model.solver_info = None
        if y_train is not None:
            model.y = model.targets(y_train).copy()
        model._check_shift()
        return model

    def derive(self, **changes: Any) -> OperatorModel:
        new = OperatorModel(
            self.backend,
            self.k,
            self.name,
            self.dims,
            self.trace,
            self.out_dtype,
            self.options.replace(**changes),
            self.fact,
        )
        new.y = self.y
        new.krylov = self.krylov
        new.solver_info = None
        new._check_shift()
        return new

    def _check_shift(self) -> None:
        o = self.options
        if o.diag_reg and not o.diag_reg_absolute_scale and self.krylov.trace() is None:
            raise ValueError(
                f"diag_reg={o.diag_reg} is relative to the mean diagonal entry, which this "
                f"kernel operator ({self.name}) does not provide (no .diagonal()): pass "
                "diag_reg_absolute_scale=True with an absolute diag_reg"
            )

    @property
    def shift(self) -> float:
        o = self.options
        if o.diag_reg_absolute_scale or o.diag_reg == 0.0:
            return o.diag_reg
        tr = self.krylov.trace()
        assert tr is not None  # _check_shift
        return o.diag_reg * tr / self.size if self.size else 0.0

    @property
    def backend_name(self) -> str:
        return "krylov"

    @property
    def op(self) -> Operator:
        return self.krylov.op

    def _dense_only(self, what: str) -> ValueError:
        return ValueError(
            f"{what} needs the eigendecomposition of a stored kernel: not available for a "
            f"kernel operator ({self.name}; the Krylov backend never forms it)"
        )

    def state(self) -> dict[str, Any]:
        raise TypeError(
            "a Predictor over a kernel operator cannot be pickled (the operator may hold "
            "a scheduler or a file); pickle the operator's inputs instead"
        )

    def spectrum(self) -> Any:
        raise self._dense_only("the spectrum (eigenvalues, diagnostics)")

    def eigenvectors(self) -> Any:
        raise self._dense_only("the eigenvectors")

    def max_learning_rate(self, n: float) -> float:
        raise self._dense_only("max_learning_rate")

    def cholesky_solve(self, rhs: Any) -> None:
        return None

    def test_train_kernel(self, raw: Any, name: str, dtype: Any) -> tuple[Any, tuple[int, ...]]:
        """``(operator or stored (M, D) kernel with matmat, (M,))``, checked before any
        product."""
        d = self.size
        if is_operator(raw):
            op = as_operator(raw, name)
            if op.shape[1] != d:
                raise ValueError(
                    f"{name} has shape {op.shape}, expected (M, {d}) (train axis second, "
                    f"the train operator's size {d})"
                )
            return op, (op.shape[0],)
        k, dims = _validate.test_train_kernel(raw, name, self.backend, self.dims, np.float64)
        return _ArrayTest(k), dims

    def __repr__(self) -> str:
        return f"OperatorModel({self.name}, D={self.size}, operator={self.op!r})"


# -- the engine ----------------------------------------------------------------------------
def _key(r0: Any) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(r0.shape).encode())
    h.update(np.ascontiguousarray(r0).tobytes())
    return h.digest()


class _Merged:
    """Block products of two concurrent solves merged into one ``matmat`` call (one sweep
    over the kernel serves both): a caller waits until the other party has its block
    ready (or has finished), and the last to arrive runs the product for both. ``cancel``
    wakes and stops the other party (an exception or Ctrl-C in one of them)."""

    def __init__(self, matmat: Any, parties: int) -> None:
        self.matmat = matmat
        self.cond = threading.Condition()
        self.active = parties
        self.pending: list[list[Any]] = []
        self.cancelled = False
        self.products = 0

    def _run(self) -> None:  # with self.cond held
        batch, self.pending = self.pending, []
        try:
            if len(batch) == 1:
                outs = [self.matmat(batch[0][0])]
            else:
                sizes = np.cumsum([b[0].shape[1] for b in batch])[:-1]
                prod = self.matmat(np.asfortranarray(np.hstack([b[0] for b in batch])))
                outs = np.split(np.asarray(prod), sizes, axis=1)
            self.products += 1
            for b, o in zip(batch, outs, strict=True):
                b[1] = o
        except BaseException as e:  # noqa: BLE001  (re-raised in every party)
            for b in batch:
                b[2] = e
        self.cond.notify_all()

    def __call__(self, v: Any) -> Any:
        with self.cond:
            if self.cancelled:
                raise _Cancelled
            req: list[Any] = [v, None, None]
            self.pending.append(req)
            if len(self.pending) >= self.active:
                self._run()
            while req[1] is None and req[2] is None:
                if self.cancelled:
                    raise _Cancelled
                self.cond.wait()
        if req[2] is not None:
            raise req[2]
        return req[1]

    def leave(self) -> None:
        with self.cond:
            self.active -= 1
            if self.pending and len(self.pending) >= self.active:
                self._run()

    def cancel(self) -> None:
        with self.cond:
            self.cancelled = True
            self.cond.notify_all()


class _Cancelled(Exception):
    """The other solve of a merged pair failed."""


class _Counted:
    def __init__(self, matmat: Any) -> None:
        self.matmat = matmat
        self.products = 0

    def __call__(self, v: Any) -> Any:
        out = self.matmat(v)
        self.products += 1
        return out


class _Solve:
    """One call's solves: the basis for the finite times, the ``t = ∞`` solution, and the
    combined ``SolverInfo``. When both need products they run concurrently (the core
    releases the GIL) and share every sweep over the kernel (``_Merged``)."""

    def __init__(self, m: OperatorModel, r0: Any, s_fin: Any, want_inf: bool) -> None:
        self.m = m
        o = m.options
        self.rtol = o.krylov_rtol
        self.max_iter = o.max_iter if o.max_iter is not None else DEFAULT_MAX_ITER
        self.rcond = m.rcond
        self.shift = m.shift
        self.r0 = r0
        self.s_fin = s_fin
        st = m.krylov
        key = _key(r0)
        cached = st.flows.get(key)
        self.flow: Any = cached if s_fin.size else None
        self.pinv: Any = None
        #: t = ∞ from the flow basis: its bound at s = ∞ met rtol without new products
        self.inf_from_flow = False
        self.inf_estimate = 0.0
        pkey = (key, self.shift, self.rtol, self.rcond, self.max_iter)
        if want_inf:
            self.pinv = st.pinvs.get(pkey)
        need_flow = bool(s_fin.size)
        need_pinv = want_inf and self.pinv is None
        before = cached.info()[2] if cached is not None else 0
        products = 0
        counted = _Counted(st.op.matmat)
        if need_flow and need_pinv and cached is None:
            merged = _Merged(st.op.matmat, 2)
            self._both(merged)
            products = merged.products
        else:
            if need_flow:
                self._flow(counted)
            elif need_pinv and cached is not None:
                # a kept basis (e.g. a diag_reg sweep): T + λI at s = ∞, no product
                self.flow = cached
                kb.flow_extend(
                    cached,
                    counted,
                    np.array([np.inf]),
                    rtol=self.rtol,
                    max_iter=max(int(cached.info()[1]), 1),
                    rcond=self.rcond,
                    shift=self.shift,
                    progress=None,
                )
            if need_pinv and self.flow is not None and self._inf_ok():
                need_pinv = False
                self.inf_from_flow = True
            elif need_pinv:
                if not need_flow:
                    self.flow = None
                self._pinv(counted)
            products = counted.products
        new_matvecs = 0
        if self.flow is not None:
            if need_flow and st.flows.get(key) is not self.flow:
                st.remember(key, self.flow)
            new_matvecs += self.flow.info()[2] - before
        if need_pinv:
            assert self.pinv is not None
            if len(st.pinvs) >= _MAX_BASES:
                st.pinvs.pop(next(iter(st.pinvs)))
            st.pinvs[pkey] = self.pinv
            new_matvecs += self.pinv.info()[2]
        parts = [x.info() for x in (self.flow, self.pinv) if x is not None]
        if parts:
            info = SolverInfo(
                method=" + ".join(p[0] for p in parts),
                iterations=sum(p[1] for p in parts),
                matvecs=new_matvecs,
                error_estimate=max(max(p[3] for p in parts), self.inf_estimate),
                converged=all(p[4] for p in parts),
                products=products,
            )
            m.solver_info = info
            if not info.converged:
                warn(
                    f"the Krylov solve ({info.method}) did not reach rtol={self.rtol:.1e} "
                    f"within max_iter={self.max_iter} block iterations: the achieved error "
                    f"estimate is {info.error_estimate:.3e} relative to max|f0 - Y| "
                    "(raise max_iter or rtol)",
                    NumericalWarning,
                )

    def _inf_ok(self) -> bool:
        """Whether the flow basis's bound at ``s = ∞`` (no product) meets ``rtol``."""
        scale = float(np.max(np.abs(self.r0))) if self.r0.size else 0.0
        if scale == 0.0:
            return False
        est = float(np.max(self.flow.bounds(np.array([np.inf]), False))) / scale
        if est <= self.rtol:
            self.inf_estimate = est
            return True
        return False

    @property
    def flow_times(self) -> Any:
        """The scaled times evaluated from the flow basis (``∞`` last when it serves
        ``t = ∞``)."""
        return np.r_[self.s_fin, np.inf] if self.inf_from_flow else self.s_fin

    def _flow(self, matmat: Any) -> None:
        bar = _Progress(self.m.options.progress, "Krylov flow", self.rtol)
        kw: dict[str, Any] = {
            "rtol": self.rtol,
            "max_iter": self.max_iter,
            "rcond": self.rcond,
            "shift": self.shift,
            "progress": bar,
        }
        try:
            if self.flow is None:
                self.flow = kb.flow_solve(matmat, self.m.size, self.r0, self.s_fin, **kw)
            else:
                kb.flow_extend(self.flow, matmat, self.s_fin, **kw)
        finally:
            bar.close()

    def _pinv(self, matmat: Any) -> None:
        bar = _Progress(self.m.options.progress, "Krylov t=inf", self.rtol)
        try:
            self.pinv = kb.pinv_solve(
                matmat,
                self.m.size,
                self.r0,
                rtol=self.rtol,
                max_iter=self.max_iter,
                rcond=self.rcond,
                shift=self.shift,
                rank=NYSTROM_RANK,
                progress=bar,
            )
        finally:
            bar.close()

    def _both(self, merged: _Merged) -> None:
        """The flow on this thread (Ctrl-C is checked at its products), ``t = ∞`` on a
        helper thread; an exception in either cancels the other and is raised here."""
        errors: list[BaseException] = []

        def helper() -> None:
            try:
                self._pinv(merged)
            except BaseException as e:  # noqa: BLE001  (raised on the calling thread)
                errors.append(e)
                merged.cancel()
            finally:
                merged.leave()

        th = threading.Thread(target=helper, name="tangentflow-krylov-inf", daemon=True)
        th.start()
        try:
            self._flow(merged)
        except BaseException:
            merged.cancel()
            raise
        finally:
            merged.leave()
            th.join()
        real = [e for e in errors if not isinstance(e, _Cancelled)]
        if real:
            raise real[0]


def _split(ts: Any, lr: float, n: int) -> tuple[Any, Any, Any, Any]:
    """Masks of ``t = 0``, finite ``t > 0`` and ``t = ∞``, and the scaled finite times."""
    zero = ts == 0
    inf = np.isinf(ts)
    fin = ~zero & ~inf
    s = (lr / n) * ts[fin]
    return zero, fin, inf, np.ascontiguousarray(s, dtype=np.float64)


def _by_time(flat: Any, nt: int, r: int) -> Any:
    """``(rows, T·R)`` time-major → ``(T, rows, R)``."""
    return np.reshape(flat, (flat.shape[0], nt, r)).transpose(1, 0, 2)


def outputs(
    m: OperatorModel,
    ts: Any,
    layout: Layout,
    yf: Any,
    f0: Any,
    test: TestInputs | None,
    want_train: bool = True,
) -> tuple[Any, Any]:
    """Train ``(T, D, R)`` and test ``(T, M, R)`` outputs (docs/numerics.md §15)."""
    with m.krylov.lock:
        return _outputs(m, ts, layout, yf, f0, test, want_train)


def _outputs(
    m: OperatorModel,
    ts: Any,
    layout: Layout,
    yf: Any,
    f0: Any,
    test: TestInputs | None,
    want_train: bool,
) -> tuple[Any, Any]:
    n = layout.size
    r0 = np.ascontiguousarray(f0 - yf, dtype=np.float64)
    d, r = r0.shape
    zero, fin, inf, s = _split(ts, m.options.learning_rate, n)
    nt = ts.shape[0]
    sol = _Solve(m, r0, s, bool(inf.any()))
    train = None
    if want_train:
        train = np.empty((nt, d, r))
        train[zero] = f0
        if sol.flow is not None:
            sf = sol.flow_times
            u = yf[None] + _by_time(sol.flow.apply(sf, False), sf.size, r)
            train[fin] = u[: s.size]
            if sol.inf_from_flow:
                train[inf] = u[-1]
        if sol.pinv is not None:
            train[inf] = yf + sol.pinv.null_part()
    tst = None
    if test is not None:
        g0 = test.g0
        image, x_img = _test_images(test, sol)
        tst = np.empty((nt, g0.shape[0], r))
        tst[zero] = g0
        if sol.flow is not None:
            sf = sol.flow_times
            w = g0[None] - _by_time(sol.flow.apply(sf, True, np.asfortranarray(image)), sf.size, r)
            tst[fin] = w[: s.size]
            if sol.inf_from_flow:
                tst[inf] = w[-1]
        if x_img is not None:
            tst[inf] = g0 - x_img
    return train, tst


def _test_images(test: TestInputs, sol: _Solve) -> tuple[Any, Any]:
    """``K_td Q`` (cached per basis in the test inputs' shared cache: only new basis
    columns are applied) and ``K_td x`` of the ``t = ∞`` solution, in one product."""
    op = test.k
    cache = test._shared.setdefault("krylov", {})
    blocks = []
    image = None
    k_old = 0
    if sol.flow is not None:
        ent = cache.get(id(sol.flow))
        if ent is not None and ent[0] is sol.flow:
            image = ent[1]
        k_old = 0 if image is None else image.shape[1]
        k_new = sol.flow.dim()
        if k_new > k_old:
            blocks.append(sol.flow.basis(k_old))
    if sol.pinv is not None:
        blocks.append(sol.pinv.solution())
    if not blocks:
        return image, None
    prod = np.asarray(op.matmat(np.asfortranarray(np.hstack(blocks))), dtype=np.float64)
    x_img = None
    if sol.pinv is not None:
        x_img = prod[:, prod.shape[1] - sol.pinv.solution().shape[1] :]
        prod = prod[:, : prod.shape[1] - x_img.shape[1]]
    if sol.flow is not None:
        if prod.shape[1]:
            image = prod if image is None else np.hstack([image, prod])
        if test.cached:
            cache.clear()
            cache[id(sol.flow)] = (sol.flow, image)
    return image, x_img


def train_loss(m: OperatorModel, ts: Any, layout: Layout, yf: Any, f0: Any) -> Any:
    """``‖f(t) − Y‖²/(2n)`` from the Krylov coefficients (``Q`` is orthonormal)."""
    with m.krylov.lock:
        return _train_loss(m, ts, layout, yf, f0)


def _train_loss(m: OperatorModel, ts: Any, layout: Layout, yf: Any, f0: Any) -> Any:
    n = layout.size
    r0 = np.ascontiguousarray(f0 - yf, dtype=np.float64)
    r = r0.shape[1]
    zero, fin, inf, s = _split(ts, m.options.learning_rate, n)
    sol = _Solve(m, r0, s, bool(inf.any()))
    sq = np.empty(ts.shape[0])
    sq[zero] = float(np.sum(r0 * r0))
    if sol.flow is not None:
        sf = sol.flow_times
        c = sol.flow.coefficients(sf, False)
        sq_f = np.sum(np.reshape(c * c, (c.shape[0], sf.size, r)), axis=(0, 2))
        sq[fin] = sq_f[: s.size]
        if sol.inf_from_flow:
            sq[inf] = sq_f[-1]
    if sol.pinv is not None:
        nul = sol.pinv.null_part()
        sq[inf] = float(np.sum(nul * nul))
    return sq / (2.0 * n)
