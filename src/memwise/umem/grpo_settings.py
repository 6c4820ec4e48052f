"""GRPO hyper-parameters of the Mem-Optimizer (the paper's defaults) and their translation to trl.

Kept apart from the trainer so the CLI and configs can read defaults without importing trl or torch:
trl's ``GRPOConfig`` and peft's ``LoraConfig`` are imported only when a config is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from memwise.exceptions import ConfigError

if TYPE_CHECKING:
    from peft import LoraConfig
    from trl.trainer.grpo_config import GRPOConfig

__all__ = ["LOSS_TYPES", "GRPOSettings", "LoRASettings"]

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")


@dataclass
class LoRASettings:
    """Train a LoRA adapter instead of the full model (opt-in; the paper trains the full model)."""

    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (lora_alpha)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"),
        metadata={"help": "Module names to adapt; Llama/Qwen attention projections by default. Never lm_head."},
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"LoRASettings.r must be at least 1, got {self.r}")
        if self.alpha < 1:
            raise ConfigError(f"LoRASettings.alpha must be at least 1, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRASettings.dropout must be in [0, 1), got {self.dropout}")
        self.target_modules = tuple(self.target_modules)
        if not self.target_modules:
            raise ConfigError(
                "LoRASettings.target_modules is empty; name the modules to adapt, e.g. ('q_proj', 'v_proj')"
            )
        if "lm_head" in self.target_modules:
            raise ConfigError("LoRASettings: trl computes log-probs from lm_head.weight directly; remove 'lm_head'")

    def to_peft_config(self) -> LoraConfig:
        """The peft ``LoraConfig`` (peft is imported here, so LoRA stays an optional dependency)."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            task_type="CAUSAL_LM",
        )


@dataclass
class GRPOSettings:
    """GRPO hyper-parameters for the Mem-Optimizer; defaults are the paper's.

    Example:
        >>> s = GRPOSettings(batch_tasks=4, group_size=4, micro_batch_size=8, max_steps=2)
        >>> s.gradient_accumulation_steps
        2
    """

    group_size: int = field(default=8, metadata={"help": "Completions per task (G); rewards are normalised per group."})
    batch_tasks: int = field(default=128, metadata={"help": "Tasks per optimizer step."})
    micro_batch_size: int = field(
        default=8,
        metadata={"help": "Completions per forward/backward pass; a memory knob that must divide G * batch_tasks."},
    )
    beta: float = field(default=0.001, metadata={"help": "KL coefficient (k3 estimator, as a loss term)."})
    epsilon: float = field(default=0.2, metadata={"help": "PPO clip range."})
    learning_rate: float = field(default=1e-6, metadata={"help": "Constant learning rate."})
    epochs: float = field(default=3.0, metadata={"help": "Passes over the training tasks."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: run all epochs)."})
    temperature: float = field(default=1.0, metadata={"help": "Rollout sampling temperature."})
    max_completion_length: int = field(default=1024, metadata={"help": "Token cap of one Mem-Optimizer output."})
    loss_type: str = field(
        default="dapo",
        metadata={"help": "trl loss aggregation; 'dapo' is verl's default token-mean over the batch."},
    )
    gradient_checkpointing: bool = field(default=True, metadata={"help": "Trade compute for activation memory."})
    model_dtype: str | None = field(
        default=None,
        metadata={"help": "dtype to load a model path in (e.g. 'bfloat16'); None keeps trl's float32."},
    )
    use_cpu: bool | None = field(default=None, metadata={"help": "Train on CPU; None: only when CUDA is absent."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; None: when the GPU has it."})
    seed: int = field(default=0, metadata={"help": "Seeds trl, sampling and the task order."})
    logging_steps: int = field(default=1, metadata={"help": "trl's own logging interval (memwise logs every step)."})
    report_to: str = field(default="none", metadata={"help": "trl/transformers trackers, e.g. 'wandb'."})
    save_model: bool = field(default=True, metadata={"help": "Save the trained model and tokenizer to <out>/final."})
    save_steps: int = field(
        default=0,
        metadata={"help": "Write a resumable checkpoint (model, optimizer, bank) every N steps; 0: none."},
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept; older ones are deleted."})
    lora: LoRASettings | None = field(default=None, metadata={"help": "Train a LoRA adapter instead (opt-in)."})

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ConfigError(f"group_size must be at least 2 (GRPO normalises within a group), got {self.group_size}")
        if self.batch_tasks < 1:
            raise ConfigError(f"batch_tasks must be at least 1, got {self.batch_tasks}")
        if self.micro_batch_size < 1 or (self.group_size * self.batch_tasks) % self.micro_batch_size:
            raise ConfigError(
                f"micro_batch_size ({self.micro_batch_size}) must divide group_size * batch_tasks "
                f"({self.group_size * self.batch_tasks}); pick a divisor such as {self.group_size}"
            )
        if self.beta < 0:
            raise ConfigError(f"beta is a KL coefficient and must be >= 0, got {self.beta}")
        if self.epsilon <= 0:
            raise ConfigError(f"epsilon (clip range) must be > 0, got {self.epsilon}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps must be positive, or -1 to run all epochs; got {self.max_steps}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0 (GRPO needs diverse samples), got {self.temperature}")
        if self.max_completion_length < 1:
            raise ConfigError(f"max_completion_length must be at least 1, got {self.max_completion_length}")
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.logging_steps < 1:
            raise ConfigError(f"logging_steps must be at least 1, got {self.logging_steps}")
        if self.save_steps < 0 or self.save_total_limit < 1:
            raise ConfigError("save_steps must be >= 0 and save_total_limit >= 1")

    @property
    def gradient_accumulation_steps(self) -> int:
        """Micro-batches per optimizer step: one optimizer step per batch of ``batch_tasks`` tasks."""
        return self.group_size * self.batch_tasks // self.micro_batch_size

    def resolved_device(self) -> tuple[bool, bool]:
        """``(use_cpu, bf16)`` with the automatic choices made: CPU without CUDA, bf16 where supported."""
        import torch

        cuda = torch.cuda.is_available()
        use_cpu = (not cuda) if self.use_cpu is None else self.use_cpu
        if self.bf16 is None:
            bf16 = (not use_cpu) and cuda and torch.cuda.is_bf16_supported()
        else:
            bf16 = self.bf16
        return use_cpu, bf16

    def to_grpo_config(self, output_dir: str | Path) -> GRPOConfig:
        """The trl ``GRPOConfig`` for these settings (vLLM off: generation uses the trained model)."""
        # From its defining module: trl's top level exports it lazily, which type checkers cannot follow.
        from trl.trainer.grpo_config import GRPOConfig

        use_cpu, bf16 = self.resolved_device()
        return GRPOConfig(
            output_dir=str(output_dir),
            num_generations=self.group_size,
            per_device_train_batch_size=self.micro_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            learning_rate=self.learning_rate,
            lr_scheduler_type="constant",
            num_train_epochs=self.epochs,
            max_steps=self.max_steps,
            beta=self.beta,
            epsilon=self.epsilon,
            temperature=self.temperature,
            max_completion_length=self.max_completion_length,
            loss_type=self.loss_type,
            scale_rewards="group",
            # Set under its new name: trl's `gradient_checkpointing` default is a deprecated alias.
            activation_checkpointing=self.gradient_checkpointing,
            use_cpu=use_cpu,
            bf16=bf16,
            model_init_kwargs={"dtype": self.model_dtype} if self.model_dtype else None,
            remove_unused_columns=False,  # the reward needs task_id and entry_ids
            report_to=self.report_to,
            logging_steps=self.logging_steps,
            save_strategy="steps" if self.save_steps else "no",
            save_steps=self.save_steps or 500,
            save_total_limit=self.save_total_limit,
            seed=self.seed,
        )
