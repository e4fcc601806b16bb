"""A values section owner that exists only for tests/test_sections.py: listing it in
``afhub.hub_config.sections.SECTIONS`` must be all it takes for check, render and docs."""

from afhub.hub_config.problems import Problem

KEYS = ("telescope",)
SCHEMA = {
    "telescope": {
        "description": "A telescope next to the facility (test section).",
        "type": "object",
        "default": {},
        "additionalProperties": False,
        "properties": {
            "aperture": {
                "description": "Aperture in metres. Default `2`.",
                "type": "integer",
                "minimum": 1,
                "default": 2,
            },
            "site": {"description": "Where it stands.", "type": "string"},
        },
    }
}


def check(values: dict) -> list[Problem]:
    if values["telescope"].get("site") == "moon":
        return [Problem("telescope.site", "no telescopes on the moon yet")]
    return []


def build(values: dict, plan) -> None:
    scope = values["telescope"]
    plan.set("Telescope", "aperture", scope["aperture"])
    if scope.get("site"):
        plan.add_env("TELESCOPE_SITE", scope["site"])
