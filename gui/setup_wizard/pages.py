"""The wizard's pages in order (ids are indexes into ``state.PAGES``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QWizardPage

if TYPE_CHECKING:
    from gui.setup_wizard.wizard import SetupWizard


def make_pages(wizard: SetupWizard) -> list[QWizardPage]:
    from gui.setup_wizard.check_page import CheckPage
    from gui.setup_wizard.code_page import CodePage
    from gui.setup_wizard.credentials_page import CredentialsPage
    from gui.setup_wizard.discover_page import DiscoverPage
    from gui.setup_wizard.done_page import DonePage
    from gui.setup_wizard.environment_page import EnvironmentPage
    from gui.setup_wizard.keys_page import KeysPage
    from gui.setup_wizard.network_page import NetworkPage

    return [DiscoverPage(wizard), NetworkPage(wizard), CredentialsPage(wizard), KeysPage(wizard), CodePage(wizard),
            EnvironmentPage(wizard), CheckPage(wizard), DonePage(wizard)]
