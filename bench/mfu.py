"""Model-FLOPs utilisation of the learner's DeepSpeed engine: a random-init model of a given
shape (no download), bf16 ZeRO-2 on GPU (fp32 on CPU), full forward + backward + optimizer
steps on micro-batches of fixed-length rows, through rrr's own DeepSpeed config.

MFU = 6 x parameters x tokens/s / peak FLOP/s (the 6N-per-token rule for a dense decoder,
attention FLOPs left out: conservative). Peak: --peak-tflops, default 989 (H100/H200 SXM dense
bf16); on CPU the figure is only a smoke check that the path runs.

  python bench/mfu.py --shape Qwen/Qwen2.5-1.5B-Instruct --steps 6       # on one GPU
  python bench/mfu.py --shape tiny --steps 2                             # runs on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 512,
        "tie_word_embeddings": True}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shape", default="Qwen/Qwen2.5-1.5B-Instruct",
                   help="a model of rrr.core.model_shapes.KNOWN_CONFIGS, or 'tiny'")  # fmt: skip
    p.add_argument("--steps", type=int, default=6, help="timed steps (after one warm-up)")
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rrr.core.config import LearnerConfig
    from rrr.core.model_shapes import KNOWN_CONFIGS, from_config
    from rrr.learner.distributed import free_address, init_distributed
    from rrr.learner.engines import deepspeed_config

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    values = TINY if args.shape == "tiny" else KNOWN_CONFIGS[args.shape]
    model_type = "qwen2" if "Qwen" in args.shape else "llama"
    config = AutoConfig.for_model(model_type, **values)
    shape = from_config(args.shape, values)
    init_distributed(0, 1, "127.0.0.1", free_address()[1], device)
    os.environ.setdefault("LOCAL_RANK", "0")
    import deepspeed

    cfg = LearnerConfig(backend="deepspeed", zero_stage=2, bf16=True, gradient_checkpointing=True,
                        micro_batch_size=args.micro_batch)  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        config, torch_dtype=torch.bfloat16 if gpu else torch.float32
    )
    model.gradient_checkpointing_enable()
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                      config=deepspeed_config(cfg, gpu))  # fmt: skip
    ids = torch.randint(0, shape.vocab, (args.micro_batch, args.seq_len), device=device)

    def step() -> None:
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()

    step()  # warm-up: allocator, kernels, optimizer state
    if gpu:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens_per_s = args.steps * args.micro_batch * args.seq_len / seconds
    mfu = 6 * shape.params * tokens_per_s / (args.peak_tflops * 1e12)
    result = {
        "shape": args.shape, "params": shape.params, "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if gpu else None, "zero_stage": 2,
        "dtype": "bfloat16" if gpu else "float32", "micro_batch": args.micro_batch,
        "seq_len": args.seq_len, "steps": args.steps, "step_s": seconds / args.steps,
        "tokens_per_s": tokens_per_s, "mfu": mfu, "peak_tflops": args.peak_tflops,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
    }  # fmt: skip
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
