#!/usr/bin/env python3
"""How much click signal is in the ratings a K-item prompt lists (training-ml100k.md, 8,192-row section).

For every sample of a `rellax retrieve --data DIR` output, the AUC against the label of the mean star rating of the
K retrieved history items, next to the same for the K most recent history items. Standard library only.

    rellax embed --items DIR/items.jsonl --template none --output items.safetensors
    rellax index --vectors items.safetensors --output index.safetensors
    rellax retrieve --index index.safetensors --data DIR --split test --k 4 --output retrieved.jsonl
    python3 benchmarks/ml100k/listed-ratings.py DIR retrieved.jsonl
"""
import json
import sys


def auc(scores, labels):
    """Mann-Whitney AUC with tied scores given their mean rank."""
    pairs = sorted(zip(scores, labels))
    positives = sum(labels)
    negatives = len(labels) - positives
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mean_rank = (i + j + 1) / 2
        rank_sum += mean_rank * sum(label for _, label in pairs[i:j])
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def main(data_dir, retrieved_path):
    samples = {}
    with open(f"{data_dir}/samples.jsonl") as f:
        for line in f:
            s = json.loads(line)
            samples[s["id"]] = s
    timelines = {}
    with open(f"{data_dir}/timelines.jsonl") as f:
        for line in f:
            t = json.loads(line)
            timelines[t["user"]] = t
    labels, listed, recent = [], [], []
    with open(retrieved_path) as f:
        for line in f:
            r = json.loads(line)
            s = samples[r["id"]]
            history = s["history"]  # the sample's history is the first `history` events of the user's timeline
            ratings = timelines[s["user"]]["ratings"][:history]
            k = len(r["positions"])
            labels.append(s["label"])
            listed.append(sum(ratings[p] for p in r["positions"]) / k)
            recent.append(sum(ratings[history - k:history]) / k)
    print(f"{len(labels)} samples, K = {k}")
    print(f"AUC of the mean rating of the retrieved K: {auc(listed, labels):.4f}")
    print(f"AUC of the mean rating of the recent K:    {auc(recent, labels):.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: listed-ratings.py PREPARED_DIR RETRIEVED.jsonl")
    main(sys.argv[1], sys.argv[2])
