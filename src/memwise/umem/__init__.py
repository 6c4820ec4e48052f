"""UMEM: a Mem-Optimizer trained with GRPO to extract and manage memory, rewarded by utility on neighbouring tasks."""
