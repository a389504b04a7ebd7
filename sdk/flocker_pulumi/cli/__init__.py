"""Command-line tools: ``flocker-deploy`` as Flocker shipped it, on the Pulumi engine."""
