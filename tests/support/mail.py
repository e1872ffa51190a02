"""Reading the emails the catcher caught."""


def ticket_link(message) -> str:
    links = [link for link in message.links if "ticket=" in link]
    assert links, f"no ticket link in {message.subject!r}"
    return links[0]
