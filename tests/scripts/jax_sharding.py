"""Run in its own process by tests/test_ecosystem.py: XLA's host device count is fixed
when JAX starts. The logistic loss's value, gradient and Hessian from generated JAX code,
with X and y sharded by rows over 4 devices: computed without gathering X, results
replicated, equal to NumPy's; and the same code under jax.vmap and jax.grad."""
import json
import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

import matdiff as md  # noqa: E402

jax.config.update("jax_enable_x64", True)
X, w, y = md.matrix("X", "n", "k"), md.vector("w", "k"), md.vector("y", "n")
loss = md.sum(md.softplus(-y * (X @ w)))
outputs = [loss, md.grad(loss, w), md.hessian(loss, w)]
f = md.compile(outputs, backend="jax", args=[w, X, y])
mesh = Mesh(np.array(jax.devices()), ("rows",))
rng = np.random.default_rng(0)
Xv, wv, yv = rng.standard_normal((400, 8)), rng.standard_normal(8), np.sign(rng.standard_normal(400))
Xs = jax.device_put(Xv, NamedSharding(mesh, PartitionSpec("rows", None)))
ys = jax.device_put(yv, NamedSharding(mesh, PartitionSpec("rows")))
ws = jax.device_put(wv, NamedSharding(mesh, PartitionSpec()))
jf = jax.jit(f.unchecked)
results = jf(ws, Xs, ys)
hlo = jf.lower(ws, Xs, ys).compile().as_text()
reference = md.compile(outputs, args=[w, X, y])(wv, Xv, yv)
batch = jax.vmap(lambda ww: f.unchecked(ww, Xv, yv)[0])(jnp.stack([wv, 2 * wv]))
print(json.dumps({
    "devices": len(jax.devices()),
    "input_shards": len(Xs.addressable_shards),
    "replicated": [r.sharding.is_fully_replicated for r in results],
    "all_gathers": hlo.count("all-gather"),
    "all_reduces": hlo.count("all-reduce"),
    "equal": [bool(np.allclose(r, e, rtol=1e-10)) for r, e in zip(results, reference)],
    "vmap": bool(np.allclose(batch, [reference[0], md.compile(loss, args=[w, X, y])(2 * wv, Xv, yv)])),
    "grad": bool(np.allclose(jax.grad(lambda ww: f.unchecked(ww, Xv, yv)[0])(wv), reference[1])),
}))
