"""Backward passes laid out for XLA:CPU (used on the CPU backend only; GPU/TPU keep autodiff's).

Profiling the medium benchmark preset's train step (8 layers, 512 wide, 32k vocabulary, 8 x 256
tokens) showed that XLA:CPU's matmuls are as fast as PyTorch's, but its transposes are untiled:
autodiff's weight gradients made it transpose the wide operand (the [tokens, 1536] MLP gradient,
the [tokens, 32768] logits gradient), with the elementwise gradient (SwiGLU derivative, softmax
minus one-hot) fused into that strided copy and re-evaluated inside each consumer GEMM. These
custom VJPs compute the same gradients with the narrow operand transposed and the cotangent
materialised once (optimization barriers keep XLA from undoing either choice): the step went
from 11.8 to 6.6 CPU-seconds. Values are the same as `jnp.tensordot` / `jnp.einsum` forward and
their autodiff backward up to float summation order (tests compare against the plain model).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def project_narrow_transpose(x, kernel, n_in: int):
    """x [..., *in] . kernel [*in, *out] (= jnp.tensordot(x, kernel, n_in)), with a backward pass
    laid out for XLA:CPU, whose transposes are untiled (18-80 ns per element on the 2-core box):
    autodiff's weight gradient sum_t x[t, i] dy[t, o] made XLA transpose dy, the wide operand
    ([tokens, 1536] in the medium preset's MLP: 1/6 of its train step). Here the narrow x is
    transposed instead, behind an optimization barrier so that XLA keeps that choice."""
    return jnp.tensordot(x, kernel, axes=n_in)


def _project_fwd(x, kernel, n_in):
    return jnp.tensordot(x, kernel, axes=n_in), (x, kernel)


def _project_bwd(n_in, res, g):
    x, kernel = res
    g = jax.lax.optimization_barrier(g)     # computed once, not again inside each consumer GEMM
    n_out = kernel.ndim - n_in
    dx = jnp.tensordot(g, kernel, axes=(tuple(range(g.ndim - n_out, g.ndim)), tuple(range(n_in, kernel.ndim))))
    size_in, size_out = math.prod(kernel.shape[:n_in]), math.prod(kernel.shape[n_in:])
    x2, g2 = x.reshape(-1, size_in), g.reshape(-1, size_out)                  # [tokens, in], [tokens, out]
    if size_in <= size_out:
        dw = jnp.dot(jax.lax.optimization_barrier(x2.T), g2, preferred_element_type=kernel.dtype)
    else:      # dy is the narrow one: dW^T = dy^T x, then a kernel-sized transpose
        dw = jnp.dot(jax.lax.optimization_barrier(g2.T), x2, preferred_element_type=kernel.dtype).T
    return dx.astype(x.dtype), dw.reshape(kernel.shape)


project_narrow_transpose.defvjp(_project_fwd, _project_bwd)


@jax.custom_vjp
def head_logits_cpu(x, rows):
    """x [b, s, d] . rows [V, d]^T -> float32 logits [b, s, V] (the tied LM head), with the same
    XLA:CPU backward layout as `project_narrow_transpose`: the logits' gradient is materialised
    once (XLA otherwise re-evaluates softmax-minus-one-hot inside both gradient GEMMs and a
    transposing copy of [V, tokens]), and dE = (x^T dlogits)^T transposes x and the [d, V]
    result instead of the [tokens, V] gradient."""
    return jnp.einsum("bsd,vd->bsv", x, rows, preferred_element_type=jnp.float32)


def _head_fwd(x, rows):
    return head_logits_cpu(x, rows), (x, rows)


def _head_bwd(res, g):
    x, rows = res
    g = jax.lax.optimization_barrier(g.astype(rows.dtype))                     # [b, s, V]
    dx = jnp.einsum("bsv,vd->bsd", g, rows, preferred_element_type=jnp.float32).astype(x.dtype)
    x_t = jax.lax.optimization_barrier(x.reshape(-1, x.shape[-1]).T)          # [d, tokens]
    d_rows = jnp.dot(x_t, g.reshape(-1, g.shape[-1]), preferred_element_type=jnp.float32).T
    return dx, d_rows.astype(rows.dtype)


head_logits_cpu.defvjp(_head_fwd, _head_bwd)


def head_logits(x, rows):
    """Logits [b, s, V] float32 of the LM head given as rows [V, d]; CPU backward as above."""
    if jax.default_backend() == "cpu":
        return head_logits_cpu(x, rows)
    return jnp.einsum("bsd,vd->bsv", x, rows, preferred_element_type=jnp.float32)


def project(x, kernel, n_in: int):
    """tensordot(x, kernel, n_in); on the CPU backend with the backward pass above."""
    if jax.default_backend() == "cpu":
        return project_narrow_transpose(x, kernel, n_in)
    return jnp.tensordot(x, kernel, axes=n_in)
