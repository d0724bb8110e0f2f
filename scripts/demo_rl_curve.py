#!/usr/bin/env python3
"""The demo's RL reward curve: the mean rollout reward of every GRPO step (the share of sampled
replies the verifier accepted), its running mean over 5 steps, and the held-out pass@1 measured
before the first step and after the last (aji grpo's metrics.jsonl), as one small SVG.

    demo_rl_curve.py RUN/metrics.jsonl OUT.svg
"""
import json
import os
import sys

W, H, L, R, T, B = 640, 300, 56, 150, 34, 44  # size and margins


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: demo_rl_curve.py RUN/metrics.jsonl OUT.svg")
    steps, evals = [], []
    with open(sys.argv[1], encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                m = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{sys.argv[1]}:{n}: not JSON ({e})")
            if "eval_pass@1" in m:
                evals.append((m["step"], m["eval_pass@1"]))
            elif "reward" in m:
                steps.append((m["step"], m["reward"]))
    if not steps:
        sys.exit(f"{sys.argv[1]}: no GRPO step logged (a run with at least one step writes a 'reward' per step)")
    last = max(s for s, _ in steps)
    x = lambda s: L + (W - L - R) * (s / last if last else 0.5)
    y = lambda v: T + (H - T - B) * (1 - v)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">GRPO: reward per step and held-out pass@1</text>']
    for v in (0, 0.25, 0.5, 0.75, 1):
        out.append(f'<line x1="{L}" x2="{W - R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for s in sorted({0, last // 2, last}):
        out.append(f'<text x="{x(s):.1f}" y="{H - B + 16}" text-anchor="middle">{s}</text>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">step</text>')
    out.append(f'<line x1="{L}" x2="{L}" y1="{T}" y2="{H - B}" stroke="#444"/>')
    out.append(f'<line x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}" stroke="#444"/>')
    pts = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in steps)
    out.append(f'<polyline points="{pts}" fill="none" stroke="#9ecae1" stroke-width="1.5"/>')
    for s, v in steps:
        out.append(f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="2" fill="#9ecae1"/>')
    avg = []
    for i in range(len(steps)):
        window = [v for _, v in steps[max(0, i - 4):i + 1]]
        avg.append((steps[i][0], sum(window) / len(window)))
    pts = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in avg)
    out.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="2.5"/>')
    for s, v in evals:
        out.append(f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="5" fill="#d62728"/>')
        out.append(f'<text x="{x(s) + 8:.1f}" y="{y(v) - 6:.1f}" fill="#d62728">{v:.3f}</text>')
    lx = W - R + 12
    for i, (color, label) in enumerate((("#9ecae1", "reward (step)"), ("#1f77b4", "reward (mean of 5)"),
                                        ("#d62728", "held-out pass@1"))):
        ly = T + 10 + 20 * i
        out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="3"/>')
        out.append(f'<text x="{lx + 24}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    os.replace(tmp, sys.argv[2])


if __name__ == "__main__":
    main()
