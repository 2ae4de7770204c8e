"""The helpdesk's console screen: every ticket with its number, linking to its record page.

It is registered through `postroom_http_routes` like the builtin plugins' screens: the host
puts it behind the operator login and adds "Helpdesk" to the navigation. It shows what
`postroom helpdesk tickets` prints, from the same function.
"""
import os

from starlette.routing import Route

from postroom import host_of, render_screen

from . import tickets

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


def ticket_list(request):
    """A plain `def`: Starlette runs it on a worker thread, so it may query the database."""
    return render_screen(request, "helpdesk/tickets.html", {"tickets": tickets.list_tickets(host_of(request))})


def register(register):
    register("/helpdesk", [Route("/", ticket_list, methods=["GET"])], nav="Helpdesk", templates=TEMPLATES)
