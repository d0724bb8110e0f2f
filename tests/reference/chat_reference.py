#!/usr/bin/env python3
"""Independent rendering of aji's chat template with tiktoken (cl100k_base + the ChatML
specials <|im_start|>=100264, <|im_end|>=100265): ids and assistant masks for a set of
conversations -> tests/fixtures/tokenizer/chat_reference.json.

Rule (docs/tokenizer.md "Chat template"): per message, <|im_start|> + encode(role + "\\n")
+ encode(content) + <|im_end|> + encode("\\n"); the mask is 1 on the content tokens and
the <|im_end|> of assistant messages. Content is encoded as ordinary text (special-token
text inside it stays text). "joint" is tiktoken on the whole rendered string with the
specials allowed; it equals the per-part ids unless content starts with white space.

Run: python3 tests/reference/chat_reference.py   (needs tiktoken; reads data/tokenizer/cl100k_base.tiktoken)
"""
import base64
import json
import os

import tiktoken

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CL100K = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""

CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi! How can I help you today?"}]},
    {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "content": "2 + 2 = 4."},
                  {"role": "user", "content": "And 3*3?"},
                  {"role": "assistant", "content": "3 * 3 = 9."}]},
    {"messages": [{"role": "user", "content": "한국어로 대답해 주세요. 서울의 인구는?"},
                  {"role": "assistant", "content": "서울의 인구는 약 940만 명입니다."}]},
    {"messages": [{"role": "user", "content": "Type <|im_end|> for me"},
                  {"role": "assistant", "content": "Here it is as text: <|im_end|> <|im_start|>"}]},
    {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]},
    {"messages": [{"role": "user", "content": "code please"},
                  {"role": "assistant", "content": "```python\ndef f(x):\n    return x * 2\n```\n"}]},
    {"messages": [{"role": "user", "content": "leading space"}, {"role": "assistant", "content": "\n\n  indented reply"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "add_generation_prompt": True},
]


def main():
    ranks = {}
    with open(os.path.join(ROOT, "data", "tokenizer", "cl100k_base.tiktoken"), "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    specials = {"<|endoftext|>": 100257, "<|im_start|>": 100264, "<|im_end|>": 100265}
    enc = tiktoken.Encoding("cl100k_chatml", pat_str=CL100K, mergeable_ranks=ranks, special_tokens=specials)
    out = []
    for conv in CONVERSATIONS:
        ids, mask, text = [], [], ""

        def part(s, m):
            e = enc.encode(s, disallowed_special=())
            ids.extend(e)
            mask.extend([m] * len(e))

        for msg in conv["messages"]:
            train = 1 if msg["role"] == "assistant" else 0
            ids.append(specials["<|im_start|>"]); mask.append(0)
            part(msg["role"] + "\n", 0)
            part(msg["content"], train)
            ids.append(specials["<|im_end|>"]); mask.append(train)
            part("\n", 0)
            text += "<|im_start|>" + msg["role"] + "\n" + msg["content"] + "<|im_end|>\n"
        if conv.get("add_generation_prompt"):
            ids.append(specials["<|im_start|>"]); mask.append(0)
            part("assistant\n", 0)
            text += "<|im_start|>assistant\n"
        # Joint encoding: only for comparison; special text typed inside content makes the
        # joint form differ on purpose (it would become a real special token).
        joint = enc.encode(text, allowed_special="all")
        assert enc.decode(ids) == text
        out.append({**conv, "text": text, "ids": ids, "mask": mask, "joint_ids": joint})
    path = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "chat_reference.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"source": "tests/reference/chat_reference.py, tiktoken " + tiktoken.__version__,
                   "specials": specials, "conversations": out}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for c in out:
        print(len(c["ids"]), "ids", sum(c["mask"]), "masked", "joint==parts" if c["joint_ids"] == c["ids"] else "joint differs")


if __name__ == "__main__":
    main()
