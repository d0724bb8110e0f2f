#!/usr/bin/env python3
"""An aji chat checkpoint as a Hugging Face model (issue 17, "Export"): with current
transformers and lm-evaluation-harness.

Checks, on an SFT checkpoint written by aji (tokenizer_config.json, generation_config.json
and config.json from src/aji/train/checkpoint.cpp write_hf_tokenizer_files):
  1. AutoTokenizer loads it (PreTrainedTokenizerFast) with bos <|endoftext|>, eos <|im_end|>,
     pad <|endoftext|>, model_max_length = the context.
  2. apply_chat_template renders exactly aji's ChatML text (render_chat_text's format, spelled
     out below) for multi-turn English/Korean conversations with a system prompt, with and
     without the generation prompt; and its token ids equal aji's render_chat ids
     (aji_greedy_ids, built by gguf_vs_llamacpp.py) for single-turn prompts.
  3. AutoModelForCausalLM.generate (greedy, the checkpoint's generation_config) returns aji's
     greedy ids token for token and stops at <|im_end|> where aji does.
  4. `lm_eval --model hf --model_args pretrained=DIR` loads it and scores a tiny local
     multiple-choice task (written here; no downloads).
Usage: python3 tests/reference/hf_export_check.py [--model CKPT_DIR] [--aji-ids BIN] [--out result.json]
Needs: transformers, torch, lm-eval (pip); skips (exit 0, saying so) when transformers is absent.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def aji_render(messages, add_generation_prompt):
    # aji's render_chat_text (src/aji/tokenizer/chat_template.cpp), spelled out independently
    s = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return s + ("<|im_start|>assistant\n" if add_generation_prompt else "")


CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are aji, a helpful assistant."},
     {"role": "user", "content": "안녕하세요"},
     {"role": "assistant", "content": "안녕하세요! 무엇을 도와드릴까요?"},
     {"role": "user", "content": "Tell me a joke.\nMake it short."}],
]
PROMPTS = ["What is the capital of France?", "안녕하세요", "Tell me a joke.", "오늘 너무 피곤해"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="/tmp/aji-gguf-check/sft_run")
    ap.add_argument("--aji-ids", default="/tmp/aji-gguf-check/bin/aji_greedy_ids")
    ap.add_argument("--out", default="")
    ap.add_argument("--n", type=int, default=32)
    a = ap.parse_args()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        import transformers
    except ImportError:
        print("SKIP: transformers/torch not installed (pip install -r tests/reference/requirements-export.txt)")
        return 0
    d = pathlib.Path(a.model)
    if (d / "latest").exists():
        d = d / (d / "latest").read_text().strip()
    res = {"transformers": transformers.__version__, "model": str(d)}
    ok = True

    tok = AutoTokenizer.from_pretrained(d)
    cfg = json.loads((d / "aji_config.json").read_text())
    res["tokenizer"] = {"class": type(tok).__name__, "bos": tok.bos_token, "eos": tok.eos_token, "pad": tok.pad_token,
                        "model_max_length": tok.model_max_length}
    ok &= tok.eos_token == "<|im_end|>" and tok.bos_token == "<|endoftext|>" and tok.pad_token == "<|endoftext|>"
    ok &= tok.model_max_length == cfg["max_seq_len"]
    print("tokenizer:", res["tokenizer"])

    renders = []
    for conv in CONVERSATIONS:
        for gen in (False, True):
            hf = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            eq = hf == aji_render(conv, gen)
            renders.append(eq)
            ok &= eq
    res["chat_template_text_equal"] = f"{sum(renders)}/{len(renders)}"
    print("apply_chat_template text == aji render:", res["chat_template_text_equal"])

    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    model.eval()
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    gens = []
    for p in PROMPTS:
        msgs = [{"role": "user", "content": p}]
        ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        entry = {"prompt": p, "hf_prompt_ids": list(ids)}
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=a.n, do_sample=False,
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        entry["hf_ids"] = out[0, len(ids):].tolist()
        entry["hf_stopped_at_im_end"] = bool(entry["hf_ids"]) and entry["hf_ids"][-1] == im_end
        if os.path.exists(a.aji_ids):
            r = subprocess.run([a.aji_ids, str(d), "chat", str(a.n)], input=p.encode(), capture_output=True, check=True)
            ours = json.loads(r.stdout)
            entry["aji_prompt_ids"] = ours["prompt_ids"]
            entry["aji_ids"] = ours["ids"]
            entry["prompt_ids_equal"] = ours["prompt_ids"] == entry["hf_prompt_ids"]
            entry["ids_equal"] = ours["ids"] == entry["hf_ids"]
            ok &= entry["prompt_ids_equal"] and entry["ids_equal"]
        gens.append(entry)
        print(f"generate {p!r}: {len(entry['hf_ids'])} ids, stopped at <|im_end|>: {entry['hf_stopped_at_im_end']}, "
              f"prompt ids equal: {entry.get('prompt_ids_equal')}, ids equal to aji: {entry.get('ids_equal')}")
    res["generate"] = gens

    # lm-eval with the hf backend on a tiny local multiple-choice task
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        items = [{"q": "The sky on a clear day is", "choices": ["blue", "green", "loud"], "gold": 0},
                 {"q": "Water freezes at zero degrees", "choices": ["Celsius", "Kelvin"], "gold": 0},
                 {"q": "대한민국의 수도는", "choices": ["서울", "부산", "도쿄"], "gold": 0},
                 {"q": "One plus one is", "choices": ["two", "seven"], "gold": 0}]
        (tmp / "items.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items))
        (tmp / "aji_tiny.yaml").write_text(
            "task: aji_tiny\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    test: {tmp / 'items.jsonl'}\n"
            "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{q}}\"\n"
            "doc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{gold}}\"\ntarget_delimiter: \" \"\n"
            "metric_list:\n  - metric: acc\n")
        env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        cmd = ["lm_eval", "--model", "hf", "--model_args", f"pretrained={d},dtype=float32", "--tasks", "aji_tiny",
               "--include_path", str(tmp), "--device", "cpu", "--batch_size", "1", "--output_path", str(tmp / "out")]
        r = subprocess.run(cmd, capture_output=True, env=env, cwd=tmp)
        tail = (r.stdout + r.stderr).decode(errors="replace").strip().splitlines()[-5:]
        res["lm_eval"] = {"returncode": r.returncode, "tail": tail}
        found = sorted((tmp / "out").rglob("results_*.json"))
        acc = json.loads(found[-1].read_text())["results"]["aji_tiny"]["acc,none"] if found else None
        res["lm_eval"]["acc"] = acc
        res["lm_eval"]["n"] = len(items)
        print(f"lm_eval --model hf: rc {r.returncode}, aji_tiny acc {acc} on {len(items)} items")
        ok &= r.returncode == 0 and acc is not None
    res["pass"] = bool(ok)
    if a.out:
        pathlib.Path(a.out).write_text(json.dumps(res, ensure_ascii=False, indent=1) + "\n")
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
