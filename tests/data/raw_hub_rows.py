"""Small fixture rows in each hub dataset's *raw* format, and what lmprune must make of them.

``RAW[name] = (file extension, raw rows, expected first normalized row)``. The tests write the
rows to tmp_path as that format and load them with ``data_files=``. Rows mimic the real hub
records (same column names, value types and quirks such as HellaSwag's string labels).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

_SQUAD_CONTEXT = "Normandy is a region in France. The Normans gave their name to it."

RAW: dict[str, tuple[str, list[dict[str, Any]], dict[str, Any]]] = {
    "sst2": ("csv", [
        {"sentence": "a gorgeous , witty , seductive movie .", "label": 1, "idx": 0},
        {"sentence": "the plot is nothing but boilerplate clichés", "label": 0, "idx": 1},
        {"sentence": "unflinchingly bleak and desperate", "label": 0, "idx": 2},
    ], {"text": "a gorgeous , witty , seductive movie .", "label": 1}),
    "mnli": ("jsonl", [
        {"premise": "Conceptually cream skimming has two basic dimensions.",
         "hypothesis": "Product and geography are what make cream skimming work.", "label": 1, "idx": 0},
        {"premise": "you know during the season", "hypothesis": "You lose the things.", "label": 0, "idx": 1},
        {"premise": "One of our number will carry out your instructions.",
         "hypothesis": "A member of my team will execute your orders.", "label": 0, "idx": 2},
    ], {"text": "Conceptually cream skimming has two basic dimensions.",
        "text_pair": "Product and geography are what make cream skimming work.", "label": 1}),
    "qnli": ("jsonl", [
        {"question": "When did the third Digimon series begin?",
         "sentence": "Unlike the two seasons before it, it was darker.", "label": 1, "idx": 0},
    ], {"text": "When did the third Digimon series begin?",
        "text_pair": "Unlike the two seasons before it, it was darker.", "label": 1}),
    "qqp": ("csv", [
        {"question1": "How is the life of a math student?", "question2": "Which level of prepration is enough?",
         "label": 0, "idx": 0},
    ], {"text": "How is the life of a math student?", "text_pair": "Which level of prepration is enough?",
        "label": 0}),
    "rte": ("jsonl", [
        {"sentence1": "No Weapons of Mass Destruction Found in Iraq Yet.",
         "sentence2": "Weapons of Mass Destruction Found in Iraq.", "label": 1, "idx": 0},
    ], {"text": "No Weapons of Mass Destruction Found in Iraq Yet.",
        "text_pair": "Weapons of Mass Destruction Found in Iraq.", "label": 1}),
    "mrpc": ("csv", [
        {"sentence1": "Amrozi accused his brother .", "sentence2": "Referring to him , Amrozi accused his brother .",
         "label": 1, "idx": 0},
    ], {"text": "Amrozi accused his brother .", "text_pair": "Referring to him , Amrozi accused his brother .",
        "label": 1}),
    "cola": ("csv", [
        {"sentence": "Our friends won't buy this analysis.", "label": 1, "idx": 0},
        {"sentence": "One more pseudo generalization and I'm giving up.", "label": 1, "idx": 1},
    ], {"text": "Our friends won't buy this analysis.", "label": 1}),
    "stsb": ("csv", [
        {"sentence1": "A plane is taking off.", "sentence2": "An air plane is taking off.", "label": 5.0, "idx": 0},
        {"sentence1": "A man is playing a flute.", "sentence2": "A man is playing a flute.", "label": 3.8, "idx": 1},
    ], {"text": "A plane is taking off.", "text_pair": "An air plane is taking off.", "label": 5.0}),
    "wnli": ("jsonl", [
        {"sentence1": "I stuck a pin through a carrot.", "sentence2": "The carrot had a hole.", "label": 1, "idx": 0},
    ], {"text": "I stuck a pin through a carrot.", "text_pair": "The carrot had a hole.", "label": 1}),
    "squad_v2": ("jsonl", [
        {"id": "56ddde6b9a695914005b9628", "title": "Normans", "context": _SQUAD_CONTEXT,
         "question": "In what country is Normandy located?",
         "answers": {"text": ["France"], "answer_start": [24]}},
        {"id": "5ad39d53604f3c001a3fe8d1", "title": "Normans", "context": _SQUAD_CONTEXT,
         "question": "Who gave their name to Normandy in the 1000s?",
         "answers": {"text": [], "answer_start": []}},
    ], {"id": "56ddde6b9a695914005b9628", "question": "In what country is Normandy located?",
        "context": _SQUAD_CONTEXT, "answers": {"text": ["France"], "answer_start": [24]}}),
    "cnn_dailymail": ("csv", [
        {"article": "LONDON, England (Reuters) -- Harry Potter star Daniel Radcliffe gains access.",
         "highlights": "Harry Potter star Daniel Radcliffe gets access.", "id": "42c027e4"},
        {"article": "Editor's note: In our Behind the Scenes series...", "highlights": "Mentally ill inmates.",
         "id": "ee8871b1"},
    ], {"document": "LONDON, England (Reuters) -- Harry Potter star Daniel Radcliffe gains access.",
        "summary": "Harry Potter star Daniel Radcliffe gets access."}),
    "wikitext2": ("txt", [
        {"text": " = Valkyria Chronicles III = "},
        {"text": " Senjō no Valkyria 3 : Unrecorded Chronicles is a tactical role @-@ playing game ."},
    ], {"text": " = Valkyria Chronicles III = "}),
    "ptb": ("jsonl", [
        {"sentence": "aer banknote berlitz calloway centrust cluett fromstein gitano"},
        {"sentence": "pierre <unk> N years old will join the board as a nonexecutive director nov. N"},
    ], {"text": "aer banknote berlitz calloway centrust cluett fromstein gitano"}),
    "bookcorpus": ("jsonl", [
        {"text": "usually , he would be tearing around the living room , playing with his toys ."},
    ], {"text": "usually , he would be tearing around the living room , playing with his toys ."}),
    "alpaca": ("json", [
        {"instruction": "Give three tips for staying healthy.", "input": "",
         "output": "1. Eat a balanced diet.", "text": "Below is an instruction..."},
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour",
         "text": "Below is an instruction..."},
    ], {"instruction": "Give three tips for staying healthy.", "input": "", "output": "1. Eat a balanced diet."}),
    "boolq": ("jsonl", [
        {"question": "do iran and afghanistan speak the same language", "answer": True,
         "passage": "Persian language -- Persian is a Western Iranian language."},
        {"question": "is elder scrolls online the same as skyrim", "answer": False, "passage": "ESO is an MMO."},
    ], {"query": "Persian language -- Persian is a Western Iranian language.\n"
                 "Question: do iran and afghanistan speak the same language?\nAnswer:",
        "choices": ["no", "yes"], "label": 1}),
    "piqa": ("jsonl", [
        {"goal": "When boiling butter, when it's ready, you can",
         "sol1": "Pour it onto a plate", "sol2": "Pour it into a jar", "label": 1},
    ], {"query": "Question: When boiling butter, when it's ready, you can\nAnswer:",
        "choices": ["Pour it onto a plate", "Pour it into a jar"], "label": 1}),
    "hellaswag": ("jsonl", [
        {"ind": 24, "activity_label": "Roof shingle removal",
         "ctx_a": "A man is sitting on a roof.", "ctx_b": "he", "ctx": "A man is sitting on a roof. he",
         "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                     "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
         "source_id": "activitynet~v_-JhWjGDPHMY", "split": "val", "split_type": "indomain", "label": "3"},
        {"ind": 9, "activity_label": "Home and Garden", "ctx_a": "[header] How to clean a sink",
         "ctx_b": "[title] Rinse", "ctx": "", "endings": ["a", "b", "c", "d"], "source_id": "wikihow~1",
         "split": "test", "split_type": "zeroshot", "label": ""},
    ], {"query": "Roof shingle removal: A man is sitting on a roof. He",
        "choices": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                    "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "label": 3}),
    "winogrande": ("jsonl", [
        {"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
         "option1": "Sarah", "option2": "Maria", "answer": "1"},
        {"sentence": "The trophy doesn't fit in the suitcase because _ is too big.",
         "option1": "trophy", "option2": "suitcase", "answer": ""},
    ], {"query": "Sarah was a much better surgeon than Maria so",
        "choices": ["Sarah always got the harder cases.", "Maria always got the harder cases."], "label": 0}),
    "arc_easy": ("jsonl", [
        {"id": "Mercury_7175875", "question": "Which factor will most likely cause a person to develop a fever?",
         "choices": {"text": ["a leg muscle relaxing", "a bacterial population in the bloodstream",
                              "several viral particles on the skin", "carbohydrates being digested"],
                     "label": ["A", "B", "C", "D"]}, "answerKey": "B"},
        {"id": "NYSEDREGENTS_2015_4_8", "question": "Which unit measures mass?",
         "choices": {"text": ["gram", "liter", "meter", "second"], "label": ["1", "2", "3", "4"]},
         "answerKey": "1"},
    ], {"query": "Question: Which factor will most likely cause a person to develop a fever?\nAnswer:",
        "choices": ["a leg muscle relaxing", "a bacterial population in the bloodstream",
                    "several viral particles on the skin", "carbohydrates being digested"], "label": 1}),
    "arc_challenge": ("jsonl", [
        {"id": "Mercury_SC_415702", "question": "George wants to warm his hands quickly. Which skin surface?",
         "choices": {"text": ["dry palms", "wet palms", "palms covered with oil", "palms covered with lotion"],
                     "label": ["A", "B", "C", "D"]}, "answerKey": "A"},
    ], {"query": "Question: George wants to warm his hands quickly. Which skin surface?\nAnswer:",
        "choices": ["dry palms", "wet palms", "palms covered with oil", "palms covered with lotion"], "label": 0}),
    "openbookqa": ("jsonl", [
        {"id": "7-980", "question_stem": "The sun is responsible for",
         "choices": {"text": ["puppies learning new tricks", "children growing up and getting old",
                              "flowers wilting in a vase", "plants sprouting, blooming and wilting"],
                     "label": ["A", "B", "C", "D"]}, "answerKey": "D"},
    ], {"query": "The sun is responsible for",
        "choices": ["puppies learning new tricks", "children growing up and getting old",
                    "flowers wilting in a vase", "plants sprouting, blooming and wilting"], "label": 3}),
}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows in the format of ``path``'s extension, as the hub's raw records would be."""
    ext = path.suffix
    if ext == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif ext == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif ext == ".json":  # a top-level array, like alpaca_data.json
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    elif ext == ".txt":
        path.write_text("".join(r["text"] + "\n" for r in rows), encoding="utf-8")
    else:
        raise ValueError(ext)
    return path
