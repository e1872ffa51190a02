"""Email templates on disk: which files make up one email, compiled in a Jinja2 sandbox.

Layout (SPEC "Templates"), relative to the templates directory::

    <name>/subject.txt body.html [body.txt]        defaults; locale variants subject.fr.txt, body.fr-CA.html
    tenants/<tenant>/<name>/                        one tenant
    clients/<client_id>/<name>/                     one application (Auth0 client ids are global)
    tenants/<tenant>/clients/<client_id>/<name>/    one application of one tenant
    _layout/base.html, _layout/ui.html …            shared files used via {% extends %} / {% import %};
                                                    any directory starting with "_" is shared and can
                                                    be overridden in the same three scopes

The most specific directory that holds the template wins as a whole (its files are never mixed
with the default's); inside it each file takes its most specific locale variant. Shared files
are resolved the same way, file by file, for the tenant, client and language of the email that
uses them. The lookup is a pure function over a set of relative paths (`resolve`), so it can be
tested exhaustively without a disk (`lookup`); `Templates` (`directory`) adds the scan, the
cache and the sandbox (`environment`); `filters` and `text` are what templates can call; `check`
is what `streamer check` reports.
"""

from streamer.templates.check import Problem, check_files
from streamer.templates.directory import Templates
from streamer.templates.environment import CompiledTemplate, Scope, error_location, scan
from streamer.templates.errors import TemplateError, TemplateNotFoundError
from streamer.templates.filters import (
    FILTERS,
    GLOBALS,
    app_name,
    babel_locale,
    country_name_filter,
    format_date_filter,
    format_datetime_filter,
    format_time_filter,
    place_filter,
    to_datetime,
)
from streamer.templates.lookup import (
    TEMPLATE_EXTENSIONS,
    TEMPLATE_FILES,
    Index,
    ResolvedTemplate,
    Variants,
    build_index,
    is_template_name,
    override_dirs,
    parse_file_name,
    pick_variant,
    resolve,
    resolve_shared,
    scope_prefixes,
    split_scope,
    template_names,
)
from streamer.templates.text import clean_text, describe_device, greeting_name

__all__ = [
    "FILTERS", "GLOBALS", "TEMPLATE_EXTENSIONS", "TEMPLATE_FILES",
    "CompiledTemplate", "Index", "Problem", "ResolvedTemplate", "Scope", "TemplateError", "TemplateNotFoundError",
    "Templates", "Variants",
    "app_name", "babel_locale", "build_index", "check_files", "clean_text", "country_name_filter", "describe_device",
    "error_location", "format_date_filter", "format_datetime_filter", "format_time_filter", "greeting_name",
    "is_template_name", "override_dirs", "parse_file_name", "pick_variant", "place_filter", "resolve",
    "resolve_shared", "scan", "scope_prefixes", "split_scope", "template_names", "to_datetime",
]
