"""Supervised fine-tuning on search trajectories with verl's SFT trainer (the warm-start's training step).

`SearchSFTDataset` is verl's `MultiTurnSFTDataset` (selected with `data.custom_cls`) plus one thing: an
assistant message that carries `segments` (rows written by `sage_rl.warmstart.GoldExample.sft_row`) is
tokenised segment by segment, the way `SearchAgentLoop` builds a PPO trajectory: the model's turns as
text it wrote (trained), each observation encoded on its own and appended (loss mask 0). So the
warm-start trains on exactly the token sequences PPO later samples and scores, with the retrieved text
masked, and chat rows without segments are verl's own.

`sft_command` is how verl documents the launch (`torchrun -m verl.trainer.sft_trainer`); on a machine with
no accelerator `sage_rl.train.cpu_platform` (loaded by `import verl`) makes it run on gloo.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset


class SearchSFTDataset(MultiTurnSFTDataset):
    """verl's multi-turn SFT dataset, with segment-wise assistant messages (see the module docstring)."""

    def _process_single_message(self, index: int, message: dict[str, Any], full_message: list,
                                tools: Any = None, enable_thinking: bool | None = None):
        segments = message.get("segments") if message["role"] == "assistant" else None
        if not segments:
            return super()._process_single_message(index, message, full_message, tools, enable_thinking)
        ids = list(self.generation_prompt)
        mask = [0] * len(ids)
        for segment in segments:
            piece = self.tokenizer.encode(segment["text"], add_special_tokens=False)
            ids += piece
            mask += [int(bool(segment["train"]))] * len(piece)
        end = self._assistant_suffix()
        ids += end
        mask += [1] * len(end)  # the end-of-turn token is the model's, as in verl's assistant messages
        input_ids = torch.tensor(ids, dtype=torch.long)
        return input_ids, torch.tensor(mask, dtype=torch.long), torch.ones_like(input_ids), {}

    def _assistant_suffix(self) -> list[int]:
        """The tokens the chat template puts after an assistant message's content (`<|im_end|>\\n`)."""
        if not hasattr(self, "_suffix"):
            marker = "\u2063sage-rl\u2063"
            text = self.tokenizer.apply_chat_template([{"role": "assistant", "content": marker}], tokenize=False)
            self._suffix = self.tokenizer.encode(text.split(marker, 1)[1], add_special_tokens=False)
        return self._suffix

    def sanity_check(self, input_ids, messages, tools, enable_thinking) -> None:
        # verl checks that per-message tokenisation equals the whole chat's; segment-wise tokenisation
        # differs on purpose (it is the agent loop's), so only chat rows without segments are checked.
        if any(m.get("segments") for m in messages if m["role"] == "assistant"):
            return
        super().sanity_check(input_ids, messages, tools, enable_thinking)


def sft_command(config_dir: Path, config_name: str, nproc_per_node: int = 1) -> list[str]:
    """verl's SFT trainer on a composed config file, launched as verl documents it (torchrun)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
            "-m", "verl.trainer.sft_trainer", f"--config-path={config_dir.resolve()}", f"--config-name={config_name}"]
