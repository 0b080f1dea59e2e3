//! Execution-mode resolution: binary translation or hardware execution, and
//! a software (shadow page table) or hardware (EPT/NPT) MMU.
//!
//! The rules, as VMware documented them for `monitor.virtual_exec` and
//! `monitor.virtual_mmu`:
//! * Binary translation cannot be combined with hardware MMU
//!   virtualization: an explicit `software` exec with a `hardware` MMU is
//!   refused.
//! * A request for hardware execution or a hardware MMU on a host that cannot
//!   provide it reverts to binary translation (and the software MMU), with a
//!   note saying so.
//! * `automatic` picks hardware only when it is actually usable for a 32-bit
//!   guest, and binary translation otherwise.
//! * `vhv.enable = "TRUE"` (virtualized VT-x/AMD-V for the guest) is refused
//!   under binary translation.
//! * `vmx.allowNested` is not decided here: it matters only when an outer
//!   VMware backdoor answers without nesting support, which the machine
//!   checks at power-on (`backdoor::outer::power_on_handshake`).
//!
//! Invariant: a [`Resolution`] never pairs [`Exec::BinaryTranslation`] with
//! [`Mmu::Hardware`], and never selects hardware the host or the monitor's
//! run loop cannot provide.

use crate::config::VmConfig;
use std::fmt;

/// Whether the run loop can drive a guest with hardware execution: it can,
/// through the KVM backend (`vcpu::kvm`).
///
/// Were this `false`, a resolved hardware mode would be reported as not
/// available and revert to binary translation.
pub const HARDWARE_BACKEND_AVAILABLE: bool = true;

/// A backend forced on the command line, in QEMU's spelling (`--accel
/// kvm`, `--accel bt`): it wins over `monitor.virtual_exec` and the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Hardware execution through `/dev/kvm`, even where the probe finds
    /// it too slow (for comparison and testing); a device that cannot
    /// create a VM is an error.
    Kvm,
    /// Binary translation.
    Bt,
}

impl Accel {
    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Bt => "bt",
        }
    }
}

/// What the configuration asks for (`monitor.virtual_exec` /
/// `monitor.virtual_mmu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ModeRequest {
    /// Hardware if usable, software otherwise.
    #[default]
    Automatic,
    /// Binary translation / shadow page tables.
    Software,
    /// Hardware virtualization / EPT-NPT.
    Hardware,
}

impl ModeRequest {
    /// Parses the configuration spelling (case-insensitive).
    pub fn parse(text: &str) -> Option<ModeRequest> {
        match text.to_ascii_lowercase().as_str() {
            "automatic" => Some(ModeRequest::Automatic),
            "software" => Some(ModeRequest::Software),
            "hardware" => Some(ModeRequest::Hardware),
            _ => None,
        }
    }
}

impl fmt::Display for ModeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModeRequest::Automatic => "automatic",
            ModeRequest::Software => "software",
            ModeRequest::Hardware => "hardware",
        })
    }
}

/// How guest instructions are executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Exec {
    /// The binary translator.
    #[default]
    BinaryTranslation,
    /// Hardware virtualization through `/dev/kvm`.
    Hardware,
}

/// How guest memory is virtualized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mmu {
    /// Shadow page tables.
    Software,
    /// Second-level translation (EPT/NPT).
    Hardware,
}

impl Exec {
    /// The configuration spelling of this mode.
    pub fn config_name(self) -> &'static str {
        match self {
            Exec::BinaryTranslation => "software",
            Exec::Hardware => "hardware",
        }
    }
}

impl Mmu {
    /// The configuration spelling of this mode.
    pub fn config_name(self) -> &'static str {
        match self {
            Mmu::Software => "software",
            Mmu::Hardware => "hardware",
        }
    }
}

/// Whether the host can provide a hardware facility.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// It can.
    Usable,
    /// It cannot, for this reason (a sentence fragment).
    Unusable(String),
    /// Nobody looked, because the configuration cannot use it (see
    /// [`needs_hardware_probe`]).
    NotProbed,
}

impl Support {
    fn is_usable(&self) -> bool {
        matches!(self, Support::Usable)
    }

    fn reason(&self) -> &str {
        match self {
            Support::Usable => "it is usable",
            Support::Unusable(reason) => reason,
            Support::NotProbed => "the host was not probed",
        }
    }
}

/// What the host can provide (see `probe::host_capabilities`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCapabilities {
    /// Hardware execution of a 32-bit protected-mode guest at useful speed.
    pub hardware_exec: Support,
    /// Second-level address translation usable by such a guest.
    pub hardware_mmu: Support,
    /// The outer hypervisor's CPUID signature, if the host is a VM.
    pub outer_hypervisor: Option<String>,
}

/// The modes a guest will run with, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// How instructions run.
    pub exec: Exec,
    /// How memory is virtualized.
    pub mmu: Mmu,
    /// Messages the user must see: explicit `hardware` requests that were
    /// reverted, and why.
    pub notes: Vec<String>,
    /// Why `exec` was chosen (shown by `nestmon probe` and `run --check`).
    pub reason: String,
}

/// A configuration whose modes cannot be honoured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    /// `monitor.virtual_exec = "software"` with `monitor.virtual_mmu = "hardware"`.
    #[error(
        "monitor.virtual_exec = \"software\" cannot be combined with monitor.virtual_mmu = \"hardware\": \
         binary translation runs the guest under the monitor's own shadow page tables, so hardware \
         MMU virtualization (EPT/NPT) is only available with hardware execution; set \
         monitor.virtual_mmu to \"software\" or \"automatic\""
    )]
    SoftwareExecWithHardwareMmu,
    /// `vhv.enable = "TRUE"` while the guest runs under binary translation.
    #[error(
        "vhv.enable = \"TRUE\" asks for virtualized VT-x/AMD-V inside the guest, which needs hardware \
         execution, but this guest runs under binary translation ({reason}); set vhv.enable = \"FALSE\""
    )]
    NestedHardwareUnderBinaryTranslation {
        /// Why binary translation was selected.
        reason: String,
    },
    /// A 64-bit kernel where hardware execution is not usable.
    #[error(
        "the kernel is a 64-bit (ELF64) kernel: it switches to long mode, which needs hardware \
         execution (VT-x/AMD-V through /dev/kvm), and none is usable here: {reason}; binary \
         translation runs 32-bit guests only. Boot a 32-bit (ELF32 i386) kernel, or run on a host \
         with VT-x/AMD-V (--accel kvm forces /dev/kvm anyway, --accel bt runs the kernel until it \
         enables long mode)"
    )]
    LongModeWithoutHardware {
        /// Why hardware execution is not usable.
        reason: String,
    },
}

/// True if resolving `config` can depend on whether the host can run the
/// guest with hardware execution — only then is the (slow) `/dev/kvm`
/// speed test worth running.
pub fn needs_hardware_probe(config: &VmConfig) -> bool {
    match config.virtual_exec {
        ModeRequest::Software => false,
        ModeRequest::Hardware => true,
        ModeRequest::Automatic => HARDWARE_BACKEND_AVAILABLE || config.vhv_enable,
    }
}

/// Resolves the modes for `config` on `host` with the run loop as built.
pub fn resolve(config: &VmConfig, host: &HostCapabilities) -> Result<Resolution, ModeError> {
    resolve_for_backend(config, host, HARDWARE_BACKEND_AVAILABLE)
}

/// Resolves the modes, given whether the run loop has a hardware backend.
pub fn resolve_for_backend(
    config: &VmConfig,
    host: &HostCapabilities,
    hardware_backend_available: bool,
) -> Result<Resolution, ModeError> {
    if config.virtual_exec == ModeRequest::Software && config.virtual_mmu == ModeRequest::Hardware {
        return Err(ModeError::SoftwareExecWithHardwareMmu);
    }
    let mut notes = Vec::new();
    let (exec, reason) = choose_exec(
        config.virtual_exec,
        &host.hardware_exec,
        hardware_backend_available,
        &mut notes,
    );
    let mmu = choose_mmu(config.virtual_mmu, exec, &host.hardware_mmu, &mut notes);
    if config.vhv_enable && exec == Exec::BinaryTranslation {
        return Err(ModeError::NestedHardwareUnderBinaryTranslation { reason });
    }
    Ok(Resolution {
        exec,
        mmu,
        notes,
        reason,
    })
}

/// The modes for a 64-bit (ELF64) kernel, given the modes `resolved` for
/// its configuration on `host` (whose `hardware_exec` must have been
/// probed as for `monitor.virtual_exec = "hardware"`): binary translation
/// cannot run long mode, so a guest resolved to it switches to hardware
/// execution where that is usable, whatever `monitor.virtual_exec` asked
/// (as VMware did), with a note; where it is not, the guest is refused.
pub fn resolve_for_64bit_kernel(
    config: &VmConfig,
    host: &HostCapabilities,
    resolved: Resolution,
) -> Result<Resolution, ModeError> {
    if resolved.exec == Exec::Hardware {
        return Ok(resolved);
    }
    if !host.hardware_exec.is_usable() {
        return Err(ModeError::LongModeWithoutHardware {
            reason: host.hardware_exec.reason().to_string(),
        });
    }
    let hardware = VmConfig {
        virtual_exec: ModeRequest::Hardware,
        ..config.clone()
    };
    let mut switched = resolve(&hardware, host)?;
    switched.notes = resolved.notes;
    switched.notes.push(format!(
        "the kernel is a 64-bit (ELF64) kernel, which binary translation cannot run \
         (monitor.virtual_exec = \"{}\"): switching to hardware execution, as VMware did",
        config.virtual_exec
    ));
    switched.reason = format!(
        "a 64-bit kernel needs hardware execution; {}",
        switched.reason
    );
    Ok(switched)
}

/// Who forced the backend: `--accel` on the command line, or the
/// configuration's `nestmon.accel` (the command line wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForcedAccel {
    /// The backend.
    pub accel: Accel,
    /// Where it was set, for messages: `None` for `--accel`, else the
    /// origin of the `nestmon.accel` setting (`/vm/a.vmx:3`, `command line
    /// (--set)`).
    pub config_origin: Option<String>,
}

impl ForcedAccel {
    /// `--accel NAME`.
    pub fn command_line(accel: Accel) -> ForcedAccel {
        ForcedAccel {
            accel,
            config_origin: None,
        }
    }

    /// How the choice is spelled where it was made: `--accel kvm`, or
    /// `nestmon.accel = "kvm" (/vm/a.vmx:3)`.
    pub fn spelling(&self) -> String {
        match &self.config_origin {
            None => format!("--accel {}", self.accel.name()),
            Some(origin) => format!("nestmon.accel = \"{}\" ({origin})", self.accel.name()),
        }
    }
}

/// Resolves the modes when `--accel` or `nestmon.accel` forces the
/// backend: `monitor.virtual_exec` and the probe are not consulted;
/// `monitor.virtual_mmu` and `vhv.enable` are resolved against the forced
/// backend as usual (`host.hardware_mmu` says whether KVM uses EPT/NPT).
pub fn resolve_forced(
    config: &VmConfig,
    host: &HostCapabilities,
    forced: &ForcedAccel,
) -> Result<Resolution, ModeError> {
    let exec = match forced.accel {
        Accel::Kvm => Exec::Hardware,
        Accel::Bt => Exec::BinaryTranslation,
    };
    let reason = format!(
        "{} was given: it forces the backend whatever monitor.virtual_exec and the probe say",
        forced.spelling()
    );
    if config.virtual_exec == ModeRequest::Software && config.virtual_mmu == ModeRequest::Hardware {
        return Err(ModeError::SoftwareExecWithHardwareMmu);
    }
    let mut notes = Vec::new();
    let mmu = choose_mmu(config.virtual_mmu, exec, &host.hardware_mmu, &mut notes);
    if config.vhv_enable && exec == Exec::BinaryTranslation {
        return Err(ModeError::NestedHardwareUnderBinaryTranslation { reason });
    }
    Ok(Resolution {
        exec,
        mmu,
        notes,
        reason,
    })
}

const NO_BACKEND: &str = "this build's run loop has no hardware execution backend yet";

/// Picks the execution mode and says why; explicit requests that cannot be
/// honoured add a note.
fn choose_exec(
    request: ModeRequest,
    hardware: &Support,
    backend: bool,
    notes: &mut Vec<String>,
) -> (Exec, String) {
    let binary_translation = |reason: String| (Exec::BinaryTranslation, reason);
    match request {
        ModeRequest::Software => {
            binary_translation("monitor.virtual_exec = \"software\" was requested".to_string())
        }
        ModeRequest::Hardware => {
            let why = if !hardware.is_usable() {
                format!("hardware execution is not usable: {}", hardware.reason())
            } else if !backend {
                format!("hardware execution is usable on this host, but {NO_BACKEND}")
            } else {
                return (Exec::Hardware, "monitor.virtual_exec = \"hardware\" was requested".into());
            };
            notes.push(format!(
                "monitor.virtual_exec = \"hardware\" was requested but {why}; reverting to binary \
                 translation"
            ));
            binary_translation(why)
        }
        ModeRequest::Automatic => match hardware {
            Support::Unusable(reason) => binary_translation(format!(
                "automatic: hardware execution is not usable ({reason}); binary translation selected"
            )),
            Support::Usable if backend => (
                Exec::Hardware,
                "automatic: hardware execution is usable and was selected".to_string(),
            ),
            Support::Usable | Support::NotProbed => binary_translation(format!(
                "automatic: {NO_BACKEND}; binary translation selected"
            )),
        },
    }
}

fn choose_mmu(
    request: ModeRequest,
    exec: Exec,
    hardware: &Support,
    notes: &mut Vec<String>,
) -> Mmu {
    match (request, exec) {
        (ModeRequest::Software, _) => Mmu::Software,
        (ModeRequest::Automatic, Exec::BinaryTranslation) => Mmu::Software,
        (ModeRequest::Hardware, Exec::BinaryTranslation) => {
            notes.push(
                "monitor.virtual_mmu = \"hardware\" was requested but the guest runs under binary \
                 translation, which uses the software MMU; reverting to the software MMU"
                    .to_string(),
            );
            Mmu::Software
        }
        (_, Exec::Hardware) if hardware.is_usable() => Mmu::Hardware,
        (ModeRequest::Hardware, Exec::Hardware) => {
            notes.push(format!(
                "monitor.virtual_mmu = \"hardware\" was requested but hardware MMU virtualization \
                 is not usable ({}); reverting to the software MMU",
                hardware.reason()
            ));
            Mmu::Software
        }
        (_, Exec::Hardware) => Mmu::Software,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(exec: Support, mmu: Support) -> HostCapabilities {
        HostCapabilities {
            hardware_exec: exec,
            hardware_mmu: mmu,
            outer_hypervisor: None,
        }
    }

    fn capable_host() -> HostCapabilities {
        host(Support::Usable, Support::Usable)
    }

    fn incapable_host() -> HostCapabilities {
        host(
            Support::Unusable("too slow".into()),
            Support::Unusable("no EPT/NPT".into()),
        )
    }

    fn config(exec: ModeRequest, mmu: ModeRequest) -> VmConfig {
        VmConfig {
            virtual_exec: exec,
            virtual_mmu: mmu,
            ..VmConfig::default()
        }
    }

    #[test]
    fn software_exec_with_hardware_mmu_is_refused() {
        let config = config(ModeRequest::Software, ModeRequest::Hardware);
        let error = resolve_for_backend(&config, &capable_host(), true).unwrap_err();
        assert_eq!(error, ModeError::SoftwareExecWithHardwareMmu);
        assert!(error.to_string().contains("binary translation"));
    }

    #[test]
    fn automatic_picks_hardware_when_usable_and_backend_exists() {
        let config = config(ModeRequest::Automatic, ModeRequest::Automatic);
        let resolution = resolve_for_backend(&config, &capable_host(), true).unwrap();
        assert_eq!(
            (resolution.exec, resolution.mmu),
            (Exec::Hardware, Mmu::Hardware)
        );
    }

    #[test]
    fn automatic_picks_binary_translation_when_hardware_unusable() {
        let config = config(ModeRequest::Automatic, ModeRequest::Automatic);
        let resolution = resolve_for_backend(&config, &incapable_host(), true).unwrap();
        assert_eq!(
            (resolution.exec, resolution.mmu),
            (Exec::BinaryTranslation, Mmu::Software)
        );
        assert!(resolution.reason.contains("too slow"));
        assert!(
            resolution.notes.is_empty(),
            "automatic choices are not notes"
        );
    }

    #[test]
    fn automatic_hardware_exec_without_slat_uses_software_mmu() {
        let config = config(ModeRequest::Automatic, ModeRequest::Automatic);
        let host = host(Support::Usable, Support::Unusable("no EPT".into()));
        let resolution = resolve_for_backend(&config, &host, true).unwrap();
        assert_eq!(
            (resolution.exec, resolution.mmu),
            (Exec::Hardware, Mmu::Software)
        );
    }

    #[test]
    fn hardware_exec_request_on_incapable_host_reverts_with_note() {
        let config = config(ModeRequest::Hardware, ModeRequest::Automatic);
        let resolution = resolve_for_backend(&config, &incapable_host(), true).unwrap();
        assert_eq!(resolution.exec, Exec::BinaryTranslation);
        assert!(resolution
            .notes
            .iter()
            .any(|n| n.contains("reverting to binary translation")));
    }

    #[test]
    fn hardware_mmu_request_reverts_when_exec_reverts() {
        let config = config(ModeRequest::Hardware, ModeRequest::Hardware);
        let resolution = resolve_for_backend(&config, &incapable_host(), true).unwrap();
        assert_eq!(
            (resolution.exec, resolution.mmu),
            (Exec::BinaryTranslation, Mmu::Software)
        );
        assert!(resolution
            .notes
            .iter()
            .any(|n| n.contains("reverting to the software MMU")));
    }

    #[test]
    fn hardware_mmu_request_reverts_without_slat() {
        let config = config(ModeRequest::Hardware, ModeRequest::Hardware);
        let host = host(Support::Usable, Support::Unusable("no NPT".into()));
        let resolution = resolve_for_backend(&config, &host, true).unwrap();
        assert_eq!(
            (resolution.exec, resolution.mmu),
            (Exec::Hardware, Mmu::Software)
        );
        assert!(resolution.notes.iter().any(|n| n.contains("no NPT")));
    }

    #[test]
    fn explicit_software_modes_need_no_hardware() {
        let config = config(ModeRequest::Software, ModeRequest::Software);
        let resolution = resolve_for_backend(&config, &capable_host(), true).unwrap();
        assert_eq!(
            (resolution.exec, resolution.mmu),
            (Exec::BinaryTranslation, Mmu::Software)
        );
        assert!(resolution.notes.is_empty());
    }

    #[test]
    fn hardware_mode_reverts_while_run_loop_has_no_hardware_backend() {
        let config = config(ModeRequest::Hardware, ModeRequest::Hardware);
        let resolution = resolve_for_backend(&config, &capable_host(), false).unwrap();
        assert_eq!(
            (resolution.exec, resolution.mmu),
            (Exec::BinaryTranslation, Mmu::Software)
        );
        assert!(resolution
            .notes
            .iter()
            .any(|n| n.contains("no hardware execution backend")));
    }

    #[test]
    fn automatic_without_backend_needs_no_probe_and_says_why() {
        let config = config(ModeRequest::Automatic, ModeRequest::Automatic);
        let host = host(Support::NotProbed, Support::NotProbed);
        let resolution = resolve_for_backend(&config, &host, false).unwrap();
        assert_eq!(resolution.exec, Exec::BinaryTranslation);
        assert!(resolution.reason.contains("no hardware execution backend"));
        assert!(resolution.notes.is_empty());
    }

    #[test]
    fn only_configurations_that_could_use_hardware_need_the_probe() {
        assert!(!needs_hardware_probe(&config(
            ModeRequest::Software,
            ModeRequest::Software
        )));
        assert!(needs_hardware_probe(&config(
            ModeRequest::Hardware,
            ModeRequest::Automatic
        )));
        let automatic = config(ModeRequest::Automatic, ModeRequest::Automatic);
        assert_eq!(needs_hardware_probe(&automatic), HARDWARE_BACKEND_AVAILABLE);
        let with_vhv = VmConfig {
            vhv_enable: true,
            ..automatic
        };
        assert!(needs_hardware_probe(&with_vhv));
    }

    #[test]
    fn resolve_uses_the_built_run_loop() {
        let config = config(ModeRequest::Automatic, ModeRequest::Automatic);
        let resolution = resolve(&config, &capable_host()).unwrap();
        let expected = if HARDWARE_BACKEND_AVAILABLE {
            Exec::Hardware
        } else {
            Exec::BinaryTranslation
        };
        assert_eq!(resolution.exec, expected);
    }

    #[test]
    fn vhv_is_refused_under_binary_translation() {
        let config = VmConfig {
            vhv_enable: true,
            ..config(ModeRequest::Software, ModeRequest::Software)
        };
        let error = resolve_for_backend(&config, &capable_host(), true).unwrap_err();
        assert!(matches!(
            error,
            ModeError::NestedHardwareUnderBinaryTranslation { .. }
        ));
        assert!(error.to_string().contains("vhv.enable"));
    }

    #[test]
    fn vhv_is_refused_when_hardware_request_reverts() {
        let config = VmConfig {
            vhv_enable: true,
            ..config(ModeRequest::Hardware, ModeRequest::Automatic)
        };
        let error = resolve_for_backend(&config, &incapable_host(), true).unwrap_err();
        assert!(error.to_string().contains("too slow"));
    }

    #[test]
    fn vhv_is_accepted_with_hardware_execution() {
        let config = VmConfig {
            vhv_enable: true,
            ..config(ModeRequest::Hardware, ModeRequest::Automatic)
        };
        let resolution = resolve_for_backend(&config, &capable_host(), true).unwrap();
        assert_eq!(resolution.exec, Exec::Hardware);
    }

    #[test]
    fn running_inside_any_vm_is_allowed_whatever_allow_nested_says() {
        let config = VmConfig {
            allow_nested: false,
            ..VmConfig::default()
        };
        let mut host = incapable_host();
        host.outer_hypervisor = Some("KVMKVMKVM".into());
        assert!(resolve_for_backend(&config, &host, true).is_ok());
    }

    #[test]
    fn a_64bit_kernel_switches_from_binary_translation_to_usable_hardware() {
        let config = VmConfig {
            virtual_exec: ModeRequest::Software,
            ..VmConfig::default()
        };
        let resolved = resolve(&config, &capable_host()).unwrap();
        assert_eq!(resolved.exec, Exec::BinaryTranslation);
        let switched = resolve_for_64bit_kernel(&config, &capable_host(), resolved).unwrap();
        assert_eq!(switched.exec, Exec::Hardware);
        assert!(switched.notes.iter().any(|n| n.contains("64-bit (ELF64)")));
    }

    #[test]
    fn a_64bit_kernel_without_usable_hardware_is_refused_with_the_reason() {
        let config = VmConfig::default();
        let resolved = resolve(&config, &incapable_host()).unwrap();
        let error = resolve_for_64bit_kernel(&config, &incapable_host(), resolved).unwrap_err();
        let ModeError::LongModeWithoutHardware { reason } = &error else {
            panic!("{error:?}");
        };
        assert!(error.to_string().contains(reason.as_str()));
    }

    #[test]
    fn accel_kvm_forces_hardware_on_a_host_the_probe_rejects() {
        let config = config(ModeRequest::Software, ModeRequest::Automatic);
        let resolution = resolve_forced(
            &config,
            &incapable_host(),
            &ForcedAccel::command_line(Accel::Kvm),
        )
        .unwrap();
        assert_eq!(
            (resolution.exec, resolution.mmu),
            (Exec::Hardware, Mmu::Software)
        );
        assert!(resolution.reason.contains("--accel kvm"));
        assert!(resolution.notes.is_empty());
    }

    #[test]
    fn accel_kvm_uses_the_hardware_mmu_where_kvm_has_one() {
        let config = config(ModeRequest::Automatic, ModeRequest::Automatic);
        let host = host(Support::Unusable("slow".into()), Support::Usable);
        let resolution =
            resolve_forced(&config, &host, &ForcedAccel::command_line(Accel::Kvm)).unwrap();
        assert_eq!(resolution.mmu, Mmu::Hardware);
    }

    #[test]
    fn accel_bt_forces_binary_translation_over_a_hardware_request() {
        let config = config(ModeRequest::Hardware, ModeRequest::Hardware);
        let resolution = resolve_forced(
            &config,
            &capable_host(),
            &ForcedAccel::command_line(Accel::Bt),
        )
        .unwrap();
        assert_eq!(
            (resolution.exec, resolution.mmu),
            (Exec::BinaryTranslation, Mmu::Software)
        );
        assert!(resolution
            .notes
            .iter()
            .any(|n| n.contains("reverting to the software MMU")));
    }

    #[test]
    fn accel_keeps_the_refusals_of_the_configuration() {
        let bad = config(ModeRequest::Software, ModeRequest::Hardware);
        assert_eq!(
            resolve_forced(
                &bad,
                &capable_host(),
                &ForcedAccel::command_line(Accel::Kvm)
            )
            .unwrap_err(),
            ModeError::SoftwareExecWithHardwareMmu
        );
        let vhv = VmConfig {
            vhv_enable: true,
            ..config(ModeRequest::Automatic, ModeRequest::Automatic)
        };
        assert!(
            resolve_forced(&vhv, &capable_host(), &ForcedAccel::command_line(Accel::Bt)).is_err()
        );
        assert!(resolve_forced(
            &vhv,
            &capable_host(),
            &ForcedAccel::command_line(Accel::Kvm)
        )
        .is_ok());
    }

    #[test]
    fn mode_requests_parse_case_insensitively() {
        assert_eq!(
            ModeRequest::parse("Automatic"),
            Some(ModeRequest::Automatic)
        );
        assert_eq!(ModeRequest::parse("SOFTWARE"), Some(ModeRequest::Software));
        assert_eq!(ModeRequest::parse("hardware"), Some(ModeRequest::Hardware));
        assert_eq!(ModeRequest::parse("hw"), None);
    }
}
