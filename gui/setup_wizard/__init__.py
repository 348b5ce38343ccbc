"""The setup wizard: Discover → Network → Credentials → Keys → Code → Environment → Check → Done (a module per page)."""

from gui.setup_wizard.core import WizardCore
from gui.setup_wizard.state import PAGES, WizardNode, WizardState, load_state, save_state
from gui.setup_wizard.wizard import SetupWizard

__all__ = ["PAGES", "SetupWizard", "WizardCore", "WizardNode", "WizardState", "load_state", "save_state"]
