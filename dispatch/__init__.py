"""Field installation and maintenance (装维) dispatch: the domain core."""
