//! What `mezzo execute` launches: offer matching and the `TaskInfo` it
//! builds, with `mesos-execute`'s choices.

use mezzo_proto::mesos::v1::{
    container_info, image, resource, value, AgentId, CommandInfo, ContainerInfo, Image, Offer,
    Resource, TaskId, TaskInfo,
};

/// Image `--containerizer=docker` runs when no `--image` is given.
pub const DEFAULT_DOCKER_IMAGE: &str = "busybox";

/// Which containerizer the task asks for (`--containerizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ContainerizerKind {
    /// A `MESOS` container (mezzo's rust backend).
    Mesos,
    /// A `DOCKER` container (mezzo's docker backend).
    Docker,
}

/// The task `mezzo execute` was asked to run.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub name: String,
    /// Shell command (`CommandInfo.shell = true`).
    pub command: String,
    pub image: Option<String>,
    pub containerizer: Option<ContainerizerKind>,
    pub cpus: f64,
    pub mem_mb: f64,
}

/// Unreserved scalar `name` in `resources` that a framework in the default
/// role may use. The deprecated `role` field is what pre-multi-role masters
/// (and Mesos's own `mesos-execute`) still use for that.
#[allow(deprecated)]
fn unreserved_scalar(resources: &[Resource], name: &str) -> f64 {
    resources
        .iter()
        .filter(|r| r.name == name && r.r#type() == value::Type::Scalar)
        .filter(|r| r.reservations.is_empty() && r.reservation.is_none())
        .filter(|r| r.role.as_deref().is_none_or(|role| role == "*"))
        .filter_map(|r| r.scalar.as_ref().map(|s| s.value))
        .sum()
}

/// Whether `offer` has the cpus and memory the task needs.
pub fn offer_fits(offer: &Offer, spec: &TaskSpec) -> bool {
    // Mesos compares scalars with a fixed-point epsilon; 1e-3 is its precision.
    const EPSILON: f64 = 1e-3;
    unreserved_scalar(&offer.resources, "cpus") + EPSILON >= spec.cpus
        && unreserved_scalar(&offer.resources, "mem") + EPSILON >= spec.mem_mb
}

/// The task's `ContainerInfo`, as `mesos-execute` builds it: none unless an
/// image or a containerizer was asked for.
pub fn container_info(spec: &TaskSpec) -> Option<ContainerInfo> {
    match (spec.containerizer, &spec.image) {
        (None, None) => None,
        (Some(ContainerizerKind::Docker), image) => Some(ContainerInfo {
            r#type: container_info::Type::Docker as i32,
            docker: Some(container_info::DockerInfo {
                image: image.clone().unwrap_or_else(|| DEFAULT_DOCKER_IMAGE.to_string()),
                network: Some(container_info::docker_info::Network::Host as i32),
                ..Default::default()
            }),
            ..Default::default()
        }),
        (Some(ContainerizerKind::Mesos) | None, image) => Some(ContainerInfo {
            r#type: container_info::Type::Mesos as i32,
            mesos: Some(container_info::MesosInfo {
                image: image.as_ref().map(|name| Image {
                    r#type: image::Type::Docker as i32,
                    docker: Some(image::Docker { name: name.clone(), ..Default::default() }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// A scalar resource for the task, carrying the offer's allocation role
/// (multi-role masters require it) when the offer has one.
#[allow(deprecated)]
fn scalar(name: &str, amount: f64, offer: &Offer) -> Resource {
    let allocation_info = offer
        .resources
        .iter()
        .find(|r| r.name == name)
        .and_then(|r| r.allocation_info.clone())
        .or_else(|| offer.allocation_info.clone());
    Resource {
        name: name.to_string(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(value::Scalar { value: amount }),
        role: Some("*".to_string()),
        allocation_info: allocation_info.map(|a| resource::AllocationInfo { role: a.role }),
        ..Default::default()
    }
}

/// The `TaskInfo` to launch on `offer`. The task id is the task's name, as
/// in `mesos-execute`; each `mezzo execute` is its own framework.
pub fn build_task(spec: &TaskSpec, offer: &Offer) -> TaskInfo {
    TaskInfo {
        name: spec.name.clone(),
        task_id: TaskId { value: spec.name.clone() },
        agent_id: AgentId { value: offer.agent_id.value.clone() },
        resources: vec![scalar("cpus", spec.cpus, offer), scalar("mem", spec.mem_mb, offer)],
        command: Some(CommandInfo {
            shell: Some(true),
            value: Some(spec.command.clone()),
            ..Default::default()
        }),
        container: container_info(spec),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezzo_proto::json::to_json_value;
    use mezzo_proto::mesos::v1::{FrameworkId, OfferId};
    use serde_json::json;

    fn spec() -> TaskSpec {
        TaskSpec {
            name: "hi".into(),
            command: "echo hi".into(),
            image: None,
            containerizer: None,
            cpus: 0.1,
            mem_mb: 32.0,
        }
    }

    fn resource(name: &str, amount: f64) -> Resource {
        Resource {
            name: name.into(),
            r#type: value::Type::Scalar as i32,
            scalar: Some(value::Scalar { value: amount }),
            ..Default::default()
        }
    }

    fn offer(resources: Vec<Resource>) -> Offer {
        Offer {
            id: OfferId { value: "O1".into() },
            framework_id: FrameworkId { value: "F1".into() },
            agent_id: AgentId { value: "S0".into() },
            hostname: "agent".into(),
            resources,
            ..Default::default()
        }
    }

    #[test]
    fn offer_with_enough_cpus_and_mem_fits() {
        assert!(offer_fits(&offer(vec![resource("cpus", 2.0), resource("mem", 1024.0)]), &spec()));
        // Exactly enough is enough, despite floating point.
        assert!(offer_fits(&offer(vec![resource("cpus", 0.1), resource("mem", 32.0)]), &spec()));
        // Split resources add up.
        assert!(offer_fits(
            &offer(vec![resource("cpus", 0.05), resource("cpus", 0.05), resource("mem", 32.0)]),
            &spec()
        ));
    }

    #[test]
    #[allow(deprecated)]
    fn offer_short_of_cpus_or_mem_or_reserved_does_not_fit() {
        assert!(!offer_fits(&offer(vec![resource("cpus", 0.05), resource("mem", 1024.0)]), &spec()));
        assert!(!offer_fits(&offer(vec![resource("cpus", 2.0), resource("mem", 16.0)]), &spec()));
        assert!(!offer_fits(&offer(vec![resource("cpus", 2.0)]), &spec()));
        let mut reserved = resource("mem", 1024.0);
        reserved.role = Some("ops".into());
        assert!(!offer_fits(&offer(vec![resource("cpus", 2.0), reserved]), &spec()));
    }

    #[test]
    fn command_task_json_has_mesos_field_names_and_no_container() {
        let task = build_task(&spec(), &offer(vec![resource("cpus", 1.0), resource("mem", 128.0)]));
        assert_eq!(
            to_json_value(&task),
            json!({
                "name": "hi",
                "task_id": {"value": "hi"},
                "agent_id": {"value": "S0"},
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}, "role": "*"},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 32.0}, "role": "*"}
                ],
                "command": {"shell": true, "value": "echo hi"}
            })
        );
    }

    #[test]
    fn image_with_mesos_containerizer_is_a_mesos_container_with_a_docker_image() {
        let spec = TaskSpec { image: Some("alpine".into()), containerizer: Some(ContainerizerKind::Mesos), ..spec() };
        let task = build_task(&spec, &offer(vec![]));
        assert_eq!(
            to_json_value(&task)["container"],
            json!({"type": "MESOS", "mesos": {"image": {"type": "DOCKER", "docker": {"name": "alpine"}}}})
        );
        // An image alone means the default (mesos) containerizer too.
        let spec = TaskSpec { containerizer: None, ..spec };
        assert_eq!(to_json_value(&build_task(&spec, &offer(vec![])))["container"]["type"], json!("MESOS"));
    }

    #[test]
    fn docker_containerizer_is_a_docker_container_on_host_network() {
        let spec = TaskSpec { containerizer: Some(ContainerizerKind::Docker), ..spec() };
        let task = build_task(&spec, &offer(vec![]));
        assert_eq!(
            to_json_value(&task)["container"],
            json!({"type": "DOCKER", "docker": {"image": "busybox", "network": "HOST"}})
        );
        let spec = TaskSpec { image: Some("alpine:3".into()), ..spec };
        assert_eq!(to_json_value(&build_task(&spec, &offer(vec![])))["container"]["docker"]["image"], json!("alpine:3"));
    }

    #[test]
    fn allocation_role_of_the_offer_is_carried_over() {
        let mut cpus = resource("cpus", 1.0);
        cpus.allocation_info = Some(resource::AllocationInfo { role: Some("*".into()) });
        let task = build_task(&spec(), &offer(vec![cpus, resource("mem", 64.0)]));
        assert_eq!(to_json_value(&task)["resources"][0]["allocation_info"], json!({"role": "*"}));
    }
}
