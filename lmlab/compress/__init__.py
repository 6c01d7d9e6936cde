"""Making models cheaper: knowledge distillation (a frozen teacher's soft targets)."""
