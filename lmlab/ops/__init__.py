"""Numerical kernels shared by all model families. Import from the submodules, e.g.
`from lmlab.ops.attention import attention` (this package re-exports nothing, so the module
`lmlab.ops.attention` is never shadowed by the function of the same name)."""
