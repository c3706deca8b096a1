"""keepa-deals: a collector of Amazon price deals from the Keepa API that never stalls silently."""
