"""Site profiles: the schema with every default, layered loading, and errors that name file, key and line."""

from mlps_slurm.profile.loader import ProfileError, SiteProfile, default_profile_ref, load_profile, list_profiles

__all__ = ["ProfileError", "SiteProfile", "default_profile_ref", "load_profile", "list_profiles"]
