//! The operator's screen in the chosen language: device names and states, what a command did,
//! and the period's state. The host hands these over as data; only failures carry the words of
//! whatever failed (a device, the OS, a library), shown as they are.

use selfvend_host::kiosk::{Device, DeviceState, OperatorMessage, Reconciled};
use selfvend_host::money::Fen;
use selfvend_host::receipt_printer::{Fault, Paper, PrinterStatus};
use selfvend_host::sale::Resolution;

use crate::lang::Lang;

pub fn device(lang: Lang, d: &Device) -> String {
    let zh = lang == Lang::Zh;
    match d {
        Device::CardReader => pick(zh, "电卡读卡器", "card reader").into(),
        Device::BankCardReader => pick(zh, "银行卡读卡器", "bank card reader").into(),
        Device::BanknoteValidator => pick(zh, "纸币识别器", "banknote validator").into(),
        Device::ReceiptPrinter => pick(zh, "凭条打印机", "receipt printer").into(),
        Device::PinPad => pick(zh, "密码键盘", "PIN pad").into(),
        Device::Acquirer(name) => format!("{} {name}", pick(zh, "收单机构", "acquirer")),
        Device::Backend(name) => format!("{} {name}", pick(zh, "售电后台", "backend")),
    }
}

pub fn device_state(lang: Lang, s: &DeviceState) -> String {
    let zh = lang == Lang::Zh;
    match s {
        DeviceState::Present(name) => name.clone(),
        DeviceState::Missing(name) => {
            format!("{name} {}", pick(zh, "未连接", "is not connected"))
        }
        DeviceState::Inhibited => pick(
            zh,
            "就绪（顾客之间禁止收币）",
            "ready (inhibited between customers)",
        )
        .into(),
        DeviceState::LastFailure(why) => {
            format!(
                "{}{why}",
                pick(zh, "可应答；上次故障：", "answers; last failure: ")
            )
        }
        DeviceState::Printer(p) => printer(zh, p),
        DeviceState::Keys { pin, mac } => match (pin, mac) {
            (true, true) => pick(zh, "工作密钥已装载", "working keys loaded").into(),
            _ => pick(
                zh,
                "工作密钥未装载（请签到）",
                "working keys not loaded (sign on)",
            )
            .into(),
        },
        DeviceState::SignedOn(batch) => {
            format!("{}{batch}", pick(zh, "已签到，批次 ", "signed on, batch "))
        }
        DeviceState::NotSignedOn => pick(zh, "未签到", "not signed on").into(),
        DeviceState::Answers => pick(zh, "应答正常", "answers").into(),
        DeviceState::Failed(why) => why.clone(),
    }
}

/// "就绪" / "ready", "缺纸" / "paper out", "纸将尽" / "paper near end", …
fn printer(zh: bool, p: &PrinterStatus) -> String {
    let mut words: Vec<&str> = Vec::new();
    if p.cover_open {
        words.push(pick(zh, "上盖打开", "cover open"));
    }
    if p.paper == Paper::Out {
        words.push(pick(zh, "缺纸", "paper out"));
    }
    if let Some(fault) = p.fault {
        words.push(match fault {
            Fault::Cutter => pick(zh, "切刀故障", "cutter error"),
            Fault::Mechanical => pick(zh, "机械故障", "mechanical error"),
            Fault::Overheated => pick(zh, "打印头过热", "print head overheated"),
            Fault::Unrecoverable => pick(zh, "不可恢复故障", "unrecoverable error"),
            Fault::Unspecified => pick(zh, "打印机故障", "printer error"),
        });
    }
    if words.is_empty() {
        words.push(if p.offline {
            pick(zh, "离线", "offline")
        } else {
            pick(zh, "就绪", "ready")
        });
    }
    if p.paper == Paper::NearEnd {
        words.push(pick(zh, "纸将尽", "paper near end"));
    }
    words.join(pick(zh, "，", ", "))
}

pub fn message(lang: Lang, m: &OperatorMessage) -> String {
    let zh = lang == Lang::Zh;
    let yuan = |f: &Fen| format!("{f} {}", pick(zh, "元", "yuan"));
    match m {
        OperatorMessage::ClearingStarted(p) => {
            if zh {
                format!("账期 {p} 清机中，暂停售电")
            } else {
                format!("period {p} is being cleared; sales are stopped")
            }
        }
        OperatorMessage::CashBoxRemoved => pick(zh, "钱箱已取出", "cash box removed").into(),
        OperatorMessage::CashBoxReplaced => pick(zh, "钱箱已放回", "cash box replaced").into(),
        OperatorMessage::Counted { counted, expected } => {
            if zh {
                format!("清点 {}，应有 {}", yuan(counted), yuan(expected))
            } else {
                format!("counted {}; expected {}", yuan(counted), yuan(expected))
            }
        }
        OperatorMessage::PeriodClosed {
            closed,
            next,
            printed,
            backends,
        } => {
            let mut text = if zh {
                format!("账期 {closed} 已结束，账期 {next} 开始")
            } else {
                format!("period {closed} closed, period {next} open")
            };
            if *printed {
                text.push_str(pick(zh, "，报表已打印", ", report printed"));
            }
            for (backend, answer) in backends {
                text.push_str(pick(zh, "；", "; "));
                text.push_str(&match (answer, zh) {
                    (Reconciled::Matched, true) => format!("{backend}：对账一致"),
                    (Reconciled::Matched, false) => format!("{backend}: reconciled"),
                    (Reconciled::Differs(d), true) => {
                        format!("{backend}：对账不一致：{}", d.join("；"))
                    }
                    (Reconciled::Differs(d), false) => {
                        format!("{backend}: does NOT reconcile: {}", d.join("; "))
                    }
                    (Reconciled::NotYet(why), true) => format!("{backend}：{why}（稍后重发）"),
                    (Reconciled::NotYet(why), false) => {
                        format!("{backend}: {why} (sent again later)")
                    }
                });
            }
            text
        }
        OperatorMessage::Resolved(item, resolution) => {
            let done = match resolution {
                Resolution::Refund => pick(zh, "已退款", "refunded"),
                Resolution::Resell => pick(zh, "已补售", "sold again"),
                Resolution::Dismiss => pick(zh, "已关闭", "closed"),
            };
            if zh {
                format!("事项 #{item} {done}")
            } else {
                format!("item {item}: {done}")
            }
        }
        OperatorMessage::Reprinted => {
            pick(zh, "已重印上一张凭条", "the last receipt was printed again").into()
        }
        OperatorMessage::ReprintCutShort => pick(
            zh,
            "上一张凭条的副本未打印完整（请检查打印机）",
            "the copy of the last receipt was cut short (see the printer)",
        )
        .into(),
        OperatorMessage::NothingToReprint => {
            pick(zh, "尚未打印过凭条", "no receipt has been printed yet").into()
        }
        OperatorMessage::SignedOn(batch) => {
            if zh {
                format!("已签到，批次 {batch}")
            } else {
                format!("signed on, batch {batch}")
            }
        }
        OperatorMessage::Settled {
            balanced,
            count,
            amount,
        } => match (balanced, zh) {
            (true, true) => format!("结算平账：收单机构计 {count} 笔，{}", yuan(amount)),
            (false, true) => format!(
                "结算不平（见日志）：收单机构计 {count} 笔，{}",
                yuan(amount)
            ),
            (true, false) => format!(
                "settlement balanced: the acquirer counts {count} purchases, {}",
                yuan(amount)
            ),
            (false, false) => format!(
                "settlement NOT balanced (see the journal): the acquirer counts {count} purchases, {}",
                yuan(amount)
            ),
        },
        OperatorMessage::BackInService => pick(zh, "已恢复服务", "back in service").into(),
        OperatorMessage::Failed(why) => why.clone(),
    }
}

/// `open` / `clearing`, as the journal names the period's state.
pub fn period_state(lang: Lang, state: &str) -> String {
    let zh = lang == Lang::Zh;
    match state {
        "open" => pick(zh, "营业中", "open").into(),
        "clearing" => pick(zh, "清机中", "clearing").into(),
        other => other.into(),
    }
}

fn pick(zh: bool, chinese: &'static str, english: &'static str) -> &'static str {
    if zh { chinese } else { english }
}
