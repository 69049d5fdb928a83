"""Which config keys the schema accepts but bridge does not act on yet.

The schema covers the whole contract from the start (DESIGN.md, "Keys of later
capabilities"); `bridge up` warns once, loudly, about each key of the user's config that
matches a pattern here. A pattern is a dotted path where `[]` stands for every item of a
list: "routes[].cache" matches the `cache:` of any route. Remove a pattern in the change
that makes its feature work.
"""

UNENFORCED: set[str] = {
    "routes[].rate_limit",
}
