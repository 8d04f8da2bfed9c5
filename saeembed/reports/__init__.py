"""HTML reports: building blocks, and the pages of stored analyses. Imports the layers below."""
