"""Rows of the small local QA file the task tests write (imported by conftest and tests)."""
from __future__ import annotations

AMAZON = (
    "The Amazon river flows through Brazil, Peru and Colombia. It is the largest river by "
    "discharge volume of water in the world, and the second longest after the Nile."
)
TEA = "Green tea is made from leaves that are steamed or pan-fried soon after picking."


def qa_record(qid: str, question: str, context: str, answer: str | None) -> dict:
    """One SQuAD 2.0 JSON question (``answer=None``: unanswerable)."""
    answers = [] if answer is None else [{"text": answer, "answer_start": context.index(answer)}]
    return {"id": qid, "question": question, "answers": answers, "is_impossible": answer is None}


#: (question, context, answer or None) in file order.
QUESTIONS = [
    ("Which river is the longest?", AMAZON, "the Nile"),
    ("Where does the Amazon flow?", AMAZON, "Brazil, Peru"),
    ("Who owns the Amazon?", AMAZON, None),
    ("How is green tea made?", TEA, "steamed"),
    ("What colour is black tea?", TEA, None),
]
