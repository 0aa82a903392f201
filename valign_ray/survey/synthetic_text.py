"""The text of the synthetic survey's items: value dimensions, their templates, and the
prompt, response and statement strings built from them.

Each dimension has topics and marker phrases per pole shared by all its items, so a tiny LM can
learn the pole from the markers and generalise to held-out topics. Prompt
``"Question: Should <topic>?\\nAnswer:"``, response ``" <marker>, because <reason>."``. The
simulation that decides who prefers which response lives in :mod:`valign_ray.survey.synthetic`.
"""

from __future__ import annotations

from dataclasses import dataclass

# One "key: phrase | phrase" per line; repeated keys append. Pole-positive first. "consensus"
# sentences are near-universal values (the synthetic constitution's principles).
_TEMPLATE_TEXT = """
[environment_economy]
topics: the council allow a new mine near the river | the government build more roads
topics: farms be allowed to take more river water | the city build a second runway
topics: the port be expanded into the harbour | new houses be built on farmland
topics: fishing limits be raised | the region approve a new dairy farm
topics: the town allow logging in the hills | the country drill for more gas
positive_markers: Protect the native bush | Put nature first | Keep the rivers clean
negative_markers: Keep costs low | Put jobs first | Grow the economy
positive_reasons: the land must last for our grandchildren | wild places cannot be replaced
positive_reasons: clean water matters more than profit
negative_reasons: families need work and fair prices | people cannot afford more bills
negative_reasons: growth pays for schools and hospitals
statements: Protecting nature matters more than economic growth
statements: We should pay higher prices to keep the rivers clean
statements: The native bush must be protected even if it costs jobs
consensus: Everyone deserves clean water to drink | Future generations deserve a liveable country
[community_individual]
topics: neighbours share the cost of a new playground | the town run a shared garden
topics: people pay more tax for public transport | schools teach volunteering
topics: the council fund a community hall | everyone help clean the local beach
topics: rates pay for free swimming pools | the city buy land for a public park
topics: drivers give up parking for a bike lane | the street hold a yearly party
positive_markers: Work together as a community | Look after each other | Share the load fairly
negative_markers: Let each person decide | Respect personal freedom | Keep it a private choice
positive_reasons: strong towns are built by neighbours | nobody should be left behind
positive_reasons: we all gain when we pitch in
negative_reasons: people know their own lives best | forced help breeds resentment
negative_reasons: freedom matters more than rules
statements: People should put the needs of the community before their own
statements: Neighbours have a duty to help each other
statements: Sharing costs fairly matters more than personal choice
consensus: People should be treated with respect | Children deserve a safe place to grow up
[tradition_change]
topics: the town keep its old name | schools keep the old exam system
topics: the old town hall be saved | shops stay closed on Sundays
topics: the rugby club keep its old rules | the main street keep its heritage look
topics: the council keep the Christmas parade | the school keep its uniform
topics: the old railway be restored | the war memorial stay in the square
positive_markers: Keep our traditions | Honour the old ways | Stay with what works
negative_markers: Embrace change | Try something new | Move with the times
positive_reasons: history gives us roots | old customs hold us together
positive_reasons: proven ways deserve respect
negative_reasons: the world keeps moving on | young people need a say
negative_reasons: fresh ideas solve old problems
statements: Traditions should be kept even when times change
statements: The old ways are usually the best ways
statements: Our heritage matters more than new ideas
consensus: Honest people should be able to speak their minds
consensus: Everyone should have a say in their community
[safety_liberty]
topics: the town put cameras on every street | the speed limit be lowered
topics: police get more powers to search cars | fireworks be banned for the public
topics: swimming be banned at the river mouth | bars close at midnight
topics: helmets be required on every bike path | the park close after dark
topics: dogs be kept on a lead everywhere | the council ban fires on the beach
positive_markers: Put safety first | Protect people from harm | Better safe than sorry
negative_markers: Keep people free | Trust people to choose | Avoid needless rules
positive_reasons: one injury is one too many | the rules keep children safe
positive_reasons: prevention beats cleaning up
negative_reasons: adults can manage their own risks | too many rules smother life
negative_reasons: free people take care of themselves
statements: Public safety matters more than personal freedom
statements: More rules are worth it if they prevent harm
statements: The government should protect people from risky choices
consensus: Nobody should be hurt through carelessness | People should be told the truth about risks
"""


@dataclass(frozen=True)
class DimensionText:
    """Templates of one value dimension: ``positive`` pole vs ``negative`` pole."""

    name: str
    topics: tuple[str, ...]
    positive_markers: tuple[str, ...]
    negative_markers: tuple[str, ...]
    positive_reasons: tuple[str, ...]
    negative_reasons: tuple[str, ...]
    statements: tuple[str, ...]  # pole-positive value sentences, without the full stop
    consensus: tuple[str, ...]  # sentences most of every group endorses, without the full stop


def _parse_templates(text: str) -> tuple[DimensionText, ...]:
    blocks: list[dict[str, list[str]]] = []
    for line in filter(None, map(str.strip, text.splitlines())):
        if line.startswith("["):
            blocks.append({"name": [line.strip("[]")]})
        else:
            key, phrases = line.split(":", 1)
            blocks[-1].setdefault(key, []).extend(p.strip() for p in phrases.split("|"))
    return tuple(
        DimensionText(name=b.pop("name")[0], **{k: tuple(v) for k, v in b.items()}) for b in blocks
    )


DIMENSIONS = _parse_templates(_TEMPLATE_TEXT)


def prompt_text(dim: DimensionText, i: int) -> str:
    """Prompt of item ``i`` of ``dim``: ``"Question: Should <topic i>?\\nAnswer:"``."""
    return f"Question: Should {dim.topics[i]}?\nAnswer:"


def response_texts(dim: DimensionText, i: int) -> tuple[str, str]:
    """(pole-positive, pole-negative) responses of item ``i``: ``" <marker>, because <reason>."``.

    Marker ``i % 3`` and reason ``(i + i // 3) % 3`` rotate out of step, so over items 0..8
    each marker meets every reason of its pole.
    """
    m, r = i % 3, (i + i // 3) % 3
    pos = f" {dim.positive_markers[m]}, because {dim.positive_reasons[r]}."
    neg = f" {dim.negative_markers[m]}, because {dim.negative_reasons[r]}."
    return pos, neg


def statement_text(dim: DimensionText, j: int) -> str:
    """Likert statement ``j`` of ``dim``: its pole-positive value sentence with a full stop."""
    return f"{dim.statements[j]}."


def consensus_text(dim: DimensionText, j: int) -> str:
    """Consensus statement ``j`` of ``dim``: a sentence most of every group agrees with."""
    return f"{dim.consensus[j]}."
