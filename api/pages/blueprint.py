"""The pages' blueprint and CSRF protection, which every module of the pages joins.

Apart from :mod:`opslab.api.pages` (which imports the modules to register
their routes), so that no module imports the package that imports it.
"""

from flask import Blueprint
from flask_wtf.csrf import CSRFProtect

blueprint = Blueprint("pages", __name__, template_folder="templates",
                      static_folder="static", static_url_path="/pages-static")
csrf = CSRFProtect()
