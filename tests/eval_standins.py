"""Stand-in records for the datasets the leaderboard suites read, in each dataset's own fields, so
lm-eval's real task configs (prompts, few-shot, process_docs, filters, metrics, group aggregation)
run offline. Only `datasets.load_dataset` as lm-eval calls it is replaced (`load_standin`); the
records are ours and mean nothing."""

from __future__ import annotations

from collections.abc import Callable

import datasets

N = 26  # arc takes 25 shots from its train split
SPLITS = ("train", "validation", "test", "dev", "murder_mysteries", "object_placements", "team_allocation")


def _bbh(name: str | None, i: int) -> dict:
    # A target must be one of the subtask's own choices (its YAML's doc_to_choice): "(A)" for the
    # lettered ones, BBH_TARGETS for the others.
    return {"input": f"Stand-in question {i} of {name}?", "target": BBH_TARGETS.get(name or "", "(A)")}


BBH_TARGETS = {"boolean_expressions": "True", "causal_judgement": "Yes", "formal_fallacies": "valid",
               "navigate": "Yes", "object_counting": "3", "sports_understanding": "yes", "web_of_lies": "Yes"}


def _gpqa(name: str | None, i: int) -> dict:
    return {"Question": f"Which is answer {i}?", "Correct Answer": f"right {i}", "Incorrect Answer 1": f"wrong a{i}",
            "Incorrect Answer 2": f"wrong b{i}", "Incorrect Answer 3": f"wrong c{i}"}


def _mmlu_pro(name: str | None, i: int) -> dict:
    return {"question_id": i, "question": f"Pick option {i % 10}.", "options": [f"option {k}" for k in range(10)],
            "answer": "ABCDEFGHIJ"[i % 10], "answer_index": i % 10, "cot_content": "", "category": "other", "src": "x"}


def _musr(name: str | None, i: int) -> dict:
    return {"narrative": f"Story {i}.", "question": "Who did it?", "choices": "['Ann', 'Bob', 'Cy']",
            "answer_index": i % 3, "answer_choice": ["Ann", "Bob", "Cy"][i % 3]}


def _ifeval(name: str | None, i: int) -> dict:
    return {"key": i, "prompt": f"Write a sentence about the number {i} without commas.",
            "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}


def _math(name: str | None, i: int) -> dict:
    return {"problem": f"What is {i} + 1?", "solution": f"It is $\\boxed{{{i + 1}}}$.", "level": "Level 5",
            "type": name or "Algebra"}


def _gsm8k(name: str | None, i: int) -> dict:
    return {"question": f"Tom has {i} apples and buys one. How many now?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}


def _truthfulqa(name: str | None, i: int) -> dict:
    return {"question": f"Is {i} a number?", "mc1_targets": {"choices": ["yes", "no"], "labels": [1, 0]},
            "mc2_targets": {"choices": ["yes", "indeed", "no"], "labels": [1, 1, 0]}}


def _winogrande(name: str | None, i: int) -> dict:
    return {"sentence": f"Ann gave Bob {i} coins because _ was kind.", "option1": "Ann", "option2": "Bob",
            "answer": "1" if i % 2 else "2"}


def _arc(name: str | None, i: int) -> dict:
    return {"id": str(i), "question": f"What comes after {i}?",
            "choices": {"text": [str(i + 1), str(i + 2), str(i + 3), str(i)], "label": ["A", "B", "C", "D"]},
            "answerKey": "A"}


def _hellaswag(name: str | None, i: int) -> dict:
    return {"ind": i, "activity_label": "Cooking", "ctx_a": f"A cook takes {i} eggs.", "ctx_b": "then she",
            "ctx": "", "endings": ["cracks them.", "sings.", "flies away.", "sleeps."], "source_id": "x",
            "split": "val", "split_type": "indomain", "label": "0"}


def _mmlu(name: str | None, i: int) -> dict:
    return {"question": f"Which is {i}?", "subject": name or "x", "choices": [str(i), "a", "b", "c"], "answer": 0}


MAKERS: dict[str, Callable[[str | None, int], dict]] = {
    "SaylorTwift/bbh": _bbh, "Idavidrein/gpqa": _gpqa, "TIGER-Lab/MMLU-Pro": _mmlu_pro, "TAUR-Lab/MuSR": _musr,
    "wis-k/instruction-following-eval": _ifeval, "DigitalLearningGmbH/MATH-lighteval": _math,
    "openai/gsm8k": _gsm8k, "truthfulqa/truthful_qa": _truthfulqa, "allenai/winogrande": _winogrande,
    "allenai/ai2_arc": _arc, "Rowan/hellaswag": _hellaswag, "cais/mmlu": _mmlu,
}


def load_standin(path: str, name: str | None = None, **kwargs: object) -> datasets.DatasetDict:
    """What `datasets.load_dataset(path, name)` gives lm-eval here: N stand-in records in every split."""
    rows = [MAKERS[path](name, i) for i in range(N)]
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows) for split in SPLITS})
