"""Load and save the cluster in a corral home, keeping the generated ssh config in step with it."""

from __future__ import annotations

from cluster.home import CorralHome
from cluster.inventory import Inventory
from cluster.inventory_file import load_inventory, save_inventory
from cluster.ssh_config import write_client_ssh_config


def load_cluster(home: CorralHome) -> Inventory:
    return load_inventory(home.inventory_path)


def save_cluster(home: CorralHome, inventory: Inventory) -> None:
    """Write the inventory (refused if the file on disk is broken) and regenerate the ssh config."""
    home.ensure()
    save_inventory(home.inventory_path, inventory)
    write_client_ssh_config(inventory.nodes, home)
