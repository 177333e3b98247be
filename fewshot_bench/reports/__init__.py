"""What stored runs become: Table 1 and Table 2, paired comparisons, figures and which runs may be combined."""
