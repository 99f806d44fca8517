"""Procedural arithmetic word problems for training prompts (never evaluation data).

Simple seeded templates (shopping, rates, sharing, percentages...) with fresh
names and numbers. Only the question is produced; the target writes the answer
when the data is regenerated. Same ``seed`` and ``count``, same problems.
"""

from __future__ import annotations

import random
from typing import Callable

NAMES = (
    "Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal",
    "Kira", "Liam", "Maya", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sami", "Tara",
)
ITEMS = ("apple", "pencil", "marble", "sticker", "cookie", "book", "shell", "card", "stamp", "orange")
SHOPS = ("bakery", "stationery shop", "market stall", "toy store", "bookshop")
SUFFIXES = (
    "",
    " Show your work.",
    " Explain your reasoning step by step.",
    "\nPlease reason step by step, and put your final answer within \\boxed{}.",
)


def _gain_loss(r: random.Random) -> str:
    name, friend = r.sample(NAMES, 2)
    item = r.choice(ITEMS)
    a, b = r.randint(5, 90), r.randint(2, 60)
    c = r.randint(1, a + b - 1)
    return (
        f"{name} has {a} {item}s. {name} buys {b} more and then gives {c} to {friend}. "
        f"How many {item}s does {name} have now?"
    )


def _change(r: random.Random) -> str:
    name, item, shop = r.choice(NAMES), r.choice(ITEMS), r.choice(SHOPS)
    price, count = r.randint(1, 12), r.randint(2, 9)
    bill = next(b for b in (5, 10, 20, 50, 100, 200) if b >= price * count)
    return (
        f"A {shop} sells {item}s for ${price} each. {name} buys {count} {item}s and pays with a "
        f"${bill} bill. How much change does {name} get?"
    )


def _reading(r: random.Random) -> str:
    name, per_day = r.choice(NAMES), r.randint(8, 45)
    pages = per_day * r.randint(3, 20) + r.choice((0, 0, r.randint(1, per_day - 1)))
    return (
        f"{name} reads {per_day} pages a day. The book has {pages} pages. "
        f"How many days does {name} need to finish it?"
    )


def _travel(r: random.Random) -> str:
    s1, h1, s2, h2 = r.randint(30, 120), r.randint(1, 6), r.randint(20, 110), r.randint(1, 5)
    return (
        f"A train travels at {s1} km per hour for {h1} hours, then at {s2} km per hour for {h2} hours. "
        "How far does it travel in total, and what is its average speed?"
    )


def _seats(r: random.Random) -> str:
    rows, per = r.randint(4, 30), r.randint(5, 25)
    taken = r.randint(1, rows * per - 1)
    return (
        f"A hall has {rows} rows of chairs with {per} chairs in each row. {taken} chairs are taken. "
        "How many are free?"
    )


def _wages(r: random.Random) -> str:
    name, wage, hours, weeks = r.choice(NAMES), r.randint(9, 40), r.randint(5, 40), r.randint(2, 12)
    return f"{name} earns ${wage} per hour and works {hours} hours a week. How much does {name} earn in {weeks} weeks?"


def _recipe(r: random.Random) -> str:
    cups, batch = r.randint(2, 6), r.choice((12, 16, 20, 24))
    want = batch * r.randint(2, 7) // r.choice((1, 2))
    return (
        f"A recipe needs {cups} cups of flour for {batch} cookies. "
        f"How many cups of flour are needed for {want} cookies?"
    )


def _savings(r: random.Random) -> str:
    name, weekly, start = r.choice(NAMES), r.randint(5, 60), r.randint(0, 100)
    goal = start + weekly * r.randint(3, 30) + r.randint(0, weekly - 1)
    return (
        f"{name} has ${start} and saves ${weekly} every week. After how many weeks will {name} "
        f"have at least ${goal}?"
    )


def _discount(r: random.Random) -> str:
    item, price, pct = r.choice(ITEMS), r.randint(4, 400), r.choice((5, 10, 15, 20, 25, 30, 40, 50))
    return f"A box of {item}s costs ${price}. It is on sale for {pct}% off. What is the sale price?"


def _sharing(r: random.Random) -> str:
    name, item, friends = r.choice(NAMES), r.choice(ITEMS), r.randint(2, 9)
    total = friends * r.randint(2, 15) + r.randint(0, friends - 1)
    return (
        f"{name} shares {total} {item}s equally among {friends} friends and keeps whatever is left. "
        f"How many {item}s does each friend get, and how many does {name} keep?"
    )


def _ages(r: random.Random) -> str:
    a, b = r.sample(NAMES, 2)
    age, diff, years = r.randint(4, 40), r.randint(2, 30), r.randint(2, 15)
    return f"{a} is {age} years old and {b} is {diff} years older. How old will {b} be in {years} years?"


def _area(r: random.Random) -> str:
    w, h, cost = r.randint(3, 40), r.randint(3, 40), r.randint(2, 25)
    return f"A garden is {w} m wide and {h} m long. Fencing costs ${cost} per metre. How much does it cost to fence it?"


TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    _gain_loss, _change, _reading, _travel, _seats, _wages,
    _recipe, _savings, _discount, _sharing, _ages, _area,
)


def math_word_problems(count: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """``count`` chat prompts (one user message each), reproducible from ``seed``.

    Examples:
        >>> math_word_problems(2, seed=1) == math_word_problems(2, seed=1)
        True
        >>> math_word_problems(1)[0][0]["role"]
        'user'
    """
    r = random.Random(f"jetspec-math-{seed}")
    out = []
    for _ in range(count):
        question = r.choice(TEMPLATES)(r) + r.choice(SUFFIXES)
        out.append([{"role": "user", "content": question}])
    return out
