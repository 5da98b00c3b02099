//! Who is calling: the caller's uid and app id, derived by the daemon from the peer's
//! credentials as the bus reports them — never from anything the caller says.
//!
//! App id, in order: the Flatpak application id (`/proc/<pid>/root/.flatpak-info`), the
//! systemd system unit the process runs in (`/proc/<pid>/cgroup` below `/system.slice/`;
//! user units are not trusted, their names are the user's choice), else the executable
//! path (`/proc/<pid>/exe`).

use std::path::Path;

/// A caller's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: u32,
    pub app_id: String,
}

/// Derives the app id of process `pid` from `proc_root` (`/proc` on a real system).
pub fn app_id(proc_root: &Path, pid: u32) -> Option<String> {
    let dir = proc_root.join(pid.to_string());
    if let Some(id) = std::fs::read_to_string(dir.join("root/.flatpak-info"))
        .ok()
        .and_then(|info| flatpak_app(&info))
    {
        return Some(id);
    }
    if let Some(unit) = std::fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|cg| system_unit(&cg))
    {
        return Some(unit);
    }
    let exe = std::fs::read_link(dir.join("exe")).ok()?;
    let exe = exe.to_string_lossy();
    Some(exe.strip_suffix(" (deleted)").unwrap_or(&exe).to_owned())
}

/// The `name=` of the `[Application]` group of a `.flatpak-info` file.
fn flatpak_app(info: &str) -> Option<String> {
    let mut in_app = false;
    for line in info.lines().map(str::trim) {
        if line.starts_with('[') {
            in_app = line == "[Application]";
        } else if in_app && let Some(name) = line.strip_prefix("name=") {
            return Some(name.trim().to_owned()).filter(|n| !n.is_empty());
        }
    }
    None
}

/// The system service a process runs in, from its cgroup v2 line (`0::/system.slice/x.service`).
fn system_unit(cgroup: &str) -> Option<String> {
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let rest = path.strip_prefix("/system.slice/")?;
    let unit = rest.split('/').next()?;
    unit.ends_with(".service").then(|| unit.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatpak_ids_come_from_the_application_group() {
        let info = "[Instance]\nname=evil\n[Application]\nname=org.example.Weather\nruntime=x\n";
        assert_eq!(flatpak_app(info).as_deref(), Some("org.example.Weather"));
        assert_eq!(flatpak_app("[Instance]\nname=x\n"), None);
    }

    #[test]
    fn only_system_units_count() {
        assert_eq!(
            system_unit("0::/system.slice/weather.service\n").as_deref(),
            Some("weather.service")
        );
        assert_eq!(
            system_unit(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/weather.service\n"
            ),
            None
        );
        assert_eq!(system_unit("0::/system.slice/cron.scope\n"), None);
        assert_eq!(system_unit("0::/\n"), None);
    }

    #[test]
    fn falls_back_to_the_executable_of_a_real_process() {
        let me = std::process::id();
        let id = app_id(Path::new("/proc"), me).unwrap();
        let exe = std::env::current_exe().unwrap();
        let in_unit =
            system_unit(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
        assert_eq!(
            id,
            in_unit.unwrap_or_else(|| exe.to_string_lossy().into_owned())
        );
        assert_eq!(app_id(Path::new("/proc"), u32::MAX), None);
    }

    #[test]
    fn a_fake_proc_tree_with_flatpak_info_wins() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("42/root");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join(".flatpak-info"),
            "[Application]\nname=org.example.A\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("42/cgroup"), "0::/system.slice/a.service\n").unwrap();
        assert_eq!(app_id(dir.path(), 42).as_deref(), Some("org.example.A"));
    }
}
