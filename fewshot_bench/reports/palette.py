"""One colour and one marker per learner, shared by every figure and plot (figures 3-5, table plots, learning
curves), and the symbols the LEO paper writes.

A learner keeps its look across figures: LEO is the same orange in figure 4, figure 5, a table's bar chart
and a learning curve. The colours are the colour-blind-safe Okabe-Ito set; learners not listed here (a
plugin's) get a stable colour and marker from their name, never a neighbour's by accident of order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

# Okabe & Ito (2008): distinguishable with the common colour-vision deficiencies, and in grey print.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
# Extra colours for learners beyond the named ones (the paper's ablations are LEO variants).
EXTRA = ("#882255", "#44AA99", "#999933", "#AA4499", "#332288", "#117733", "#6699CC", "#888888")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")

MEDIAN = "#000000"  # box plot medians: black on every fill, never the fill's own colour
SUPPORT = "#C0392B"  # figure 3's support points and their x positions: data, not a learner
BEFORE = "#6E6E6E"  # figure 4's codes z before adaptation (the adapted z' take LEO's colour)
BACKGROUND = "#D9D9D9"  # figure 4(c)'s other codes


@dataclass(frozen=True)
class Style:
    """How a learner is drawn: its colour (hex), marker and the name figures print for it."""

    colour: str
    marker: str
    label: str


STYLES: dict[str, Style] = {
    "leo": Style("#E69F00", "o", "LEO"),
    "metasgd": Style("#0072B2", "s", "Meta-SGD"),
    "maml": Style("#009E73", "^", "MAML"),
    "logreg": Style("#CC79A7", "D", "Logistic regression"),
    "nearest-centroid": Style("#56B4E9", "v", "Nearest centroid"),
    "leo-generator-only": Style("#882255", "P", "LEO: conditional generator only"),
    "leo-generator-finetune": Style("#44AA99", "X", "LEO: conditional generator + fine-tuning"),
    "leo-random-prior": Style("#999933", "h", "LEO (random prior)"),
    "leo-deterministic": Style("#D55E00", "<", "LEO (deterministic)"),
    "leo-no-finetune": Style("#332288", ">", "LEO (no fine-tuning)"),
    "mlp-scratch": Style("#6699CC", "p", "MLP from scratch"),
}

# The paper's symbols (section 2-3): classifier weights theta, latent codes z, adapted z', the decoder phi_d.
THETA, PHI, ALPHA = "θ", "φ", "α"
Z, Z_ADAPTED, THETA_ADAPTED = "z", "z′", "θ′"


def style(learner: str) -> Style:
    """The look of ``learner``: its own if named above, else a stable colour and marker hashed from its name."""
    if learner in STYLES:
        return STYLES[learner]
    h = zlib.crc32(learner.encode())  # stable across processes, unlike hash()
    return Style(EXTRA[h % len(EXTRA)], MARKERS[(h // len(EXTRA)) % len(MARKERS)], learner)


def colour(learner: str) -> str:
    """The colour of ``learner`` (hex)."""
    return style(learner).colour
