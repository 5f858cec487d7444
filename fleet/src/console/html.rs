//! The console's HTML: every value from a kiosk, a backend or a user goes through [`esc`], so
//! it is shown as text, never as markup; and the words in Chinese and English.

use std::fmt::Write;

/// `text` escaped for HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Fen as yuan, `123.45`.
pub fn yuan(fen: u64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// The console's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub fn parse(s: Option<&str>) -> Lang {
        match s {
            Some("en") => Lang::En,
            _ => Lang::Zh,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    pub fn words(self) -> &'static Words {
        match self {
            Lang::Zh => &ZH,
            Lang::En => &EN,
        }
    }
}

/// Every text the console shows.
pub struct Words {
    pub title: &'static str,
    pub sign_in: &'static str,
    pub name: &'static str,
    pub password: &'static str,
    pub wrong_password: &'static str,
    pub locked: &'static str,
    pub sign_out: &'static str,
    pub fleet: &'static str,
    pub kiosk: &'static str,
    pub terminal: &'static str,
    pub region: &'static str,
    pub status: &'static str,
    pub online: &'static str,
    pub down: &'static str,
    pub out_of_service: &'static str,
    pub stuck: &'static str,
    pub stuck_money_in: &'static str,
    pub screen: &'static str,
    pub last_heartbeat: &'static str,
    pub never: &'static str,
    pub seconds_ago: &'static str,
    pub journal_rows: &'static str,
    pub open_items: &'static str,
    pub alerts: &'static str,
    pub no_kiosks: &'static str,
    pub pairing_code: &'static str,
    pub new_pairing_code: &'static str,
    pub code_valid: &'static str,
    pub devices: &'static str,
    pub device: &'static str,
    pub state: &'static str,
    pub detail: &'static str,
    pub cash_box: &'static str,
    pub notes: &'static str,
    pub period: &'static str,
    pub sales: &'static str,
    pub bill_payments: &'static str,
    pub recent_sales: &'static str,
    pub time: &'static str,
    pub card: &'static str,
    pub amount: &'static str,
    pub chain: &'static str,
    pub chain_ok: &'static str,
    pub chain_held: &'static str,
    pub plugins: &'static str,
    pub version: &'static str,
    pub software: &'static str,
    pub opened: &'static str,
    pub yuan: &'static str,
    pub forbidden: &'static str,
    pub no_such_kiosk: &'static str,
    pub clearings: &'static str,
    pub closed_at: &'static str,
    pub expected: &'static str,
    pub counted: &'static str,
    pub difference: &'static str,
    pub sold_by_utility: &'static str,
    pub not_counted: &'static str,
    pub takings: &'static str,
    pub day: &'static str,
    pub utility: &'static str,
    pub business: &'static str,
    pub count: &'static str,
    pub release: &'static str,
    pub releases: &'static str,
    pub after_row: &'static str,
    pub capacity_unknown: &'static str,
    pub of_capacity: &'static str,
    pub no_recent_notes: &'static str,
    pub full_in_days: &'static str,
    pub serial: &'static str,
    pub reason: &'static str,
    pub caught: &'static str,
    pub customer: &'static str,
    pub address: &'static str,
    pub sale: &'static str,
    pub bill_payment: &'static str,
    pub items_title: &'static str,
    pub session_expired: &'static str,
    pub not_shown: &'static str,
    /// 现金售电, 银行卡售电, 现金缴费, 银行卡缴费.
    pub businesses: [&'static str; 4],
    pub rollouts: super::rollouts::RolloutWords,
    pub commands: super::commands::CommandWords,
}

const ZH: Words = Words {
    title: "自助售电终端管理",
    sign_in: "登录",
    name: "用户名",
    password: "密码",
    wrong_password: "用户名或密码错误",
    locked: "密码错误次数过多，已锁定15分钟",
    sign_out: "退出",
    fleet: "终端总览",
    kiosk: "终端",
    terminal: "终端号",
    region: "地区",
    status: "状态",
    online: "在线",
    down: "离线",
    out_of_service: "暂停服务",
    stuck: "界面停留过久",
    stuck_money_in: "界面停留过久（有投币）",
    screen: "当前界面",
    last_heartbeat: "最近心跳",
    never: "从未",
    seconds_ago: "秒前",
    journal_rows: "日志行数",
    open_items: "待处理事项",
    alerts: "告警",
    no_kiosks: "尚无终端",
    pairing_code: "配对码",
    new_pairing_code: "生成配对码",
    code_valid: "一小时内有效，仅可使用一次",
    devices: "设备",
    device: "设备",
    state: "状态",
    detail: "说明",
    cash_box: "钞箱",
    notes: "张",
    period: "本期",
    sales: "售电",
    bill_payments: "缴费",
    recent_sales: "最近售电和缴费",
    time: "时间",
    card: "卡号",
    amount: "金额",
    chain: "日志链",
    chain_ok: "完整",
    chain_held: "链断裂，已暂停接收",
    plugins: "插件",
    version: "版本",
    software: "软件版本",
    opened: "发生时间",
    yuan: "元",
    forbidden: "无此权限",
    no_such_kiosk: "无此终端",
    clearings: "清机记录",
    closed_at: "清机时间",
    expected: "应有现金",
    counted: "清点现金",
    difference: "差额",
    sold_by_utility: "各单位售电",
    not_counted: "未清点",
    takings: "每日售电与缴费",
    day: "日期（UTC）",
    utility: "供电单位",
    business: "业务",
    count: "笔数",
    release: "接受断点并恢复接收",
    releases: "已接受的断点",
    after_row: "第",
    capacity_unknown: "容量未配置",
    of_capacity: "已用 {p}%（容量 {c} 张）",
    no_recent_notes: "近期无入钞",
    full_in_days: "预计 {} 天后满",
    serial: "流水号",
    reason: "原因",
    caught: "卡钞",
    customer: "户名",
    address: "地址",
    sale: "售电",
    bill_payment: "缴费",
    items_title: "全部待处理事项",
    rollouts: super::rollouts::ZH,
    commands: super::commands::ZH,
    session_expired: "页面已过期，请重新登录",
    not_shown: "（仅操作员可见）",
    businesses: ["现金售电", "银行卡售电", "现金缴费", "银行卡缴费"],
};

const EN: Words = Words {
    title: "Self-service kiosk fleet",
    sign_in: "Sign in",
    name: "Name",
    password: "Password",
    wrong_password: "Wrong name or password",
    locked: "Too many wrong passwords: locked for 15 minutes",
    sign_out: "Sign out",
    fleet: "Fleet",
    kiosk: "Kiosk",
    terminal: "Terminal",
    region: "Region",
    status: "Status",
    online: "online",
    down: "down",
    out_of_service: "out of service",
    stuck: "stuck",
    stuck_money_in: "stuck with money in",
    screen: "Screen",
    last_heartbeat: "Last heartbeat",
    never: "never",
    seconds_ago: "s ago",
    journal_rows: "Journal rows",
    open_items: "Open items",
    alerts: "Alerts",
    no_kiosks: "No kiosks yet",
    pairing_code: "Pairing code",
    new_pairing_code: "New pairing code",
    code_valid: "valid for one hour, once",
    devices: "Devices",
    device: "Device",
    state: "State",
    detail: "Detail",
    cash_box: "Cash box",
    notes: "notes",
    period: "This period",
    sales: "Sales",
    bill_payments: "Bill payments",
    recent_sales: "Recent sales and bill payments",
    time: "Time",
    card: "Card",
    amount: "Amount",
    chain: "Journal chain",
    chain_ok: "intact",
    chain_held: "broken: ingest held",
    plugins: "Plugins",
    version: "Version",
    software: "Software",
    opened: "Opened",
    yuan: "yuan",
    forbidden: "Not allowed",
    no_such_kiosk: "No such kiosk",
    clearings: "Clearings",
    closed_at: "Closed",
    expected: "Cash expected",
    counted: "Cash counted",
    difference: "Difference",
    sold_by_utility: "Sold per utility",
    not_counted: "not counted",
    takings: "Sales and bill payments per day",
    day: "Day (UTC)",
    utility: "Utility",
    business: "Business",
    count: "Count",
    release: "Accept the break and resume ingest",
    releases: "Accepted breaks",
    after_row: "after row",
    capacity_unknown: "capacity not configured",
    of_capacity: "{p}% of {c}",
    no_recent_notes: "no banknotes lately",
    full_in_days: "full in about {} days",
    serial: "Serial",
    reason: "Reason",
    caught: "Caught banknote",
    customer: "Customer",
    address: "Address",
    sale: "sale",
    bill_payment: "bill payment",
    items_title: "Open items across the fleet",
    rollouts: super::rollouts::EN,
    commands: super::commands::EN,
    session_expired: "The page expired; sign in again",
    not_shown: "(operators only)",
    businesses: [
        "cash sales",
        "bank-card sales",
        "cash bill payments",
        "bank-card bill payments",
    ],
};

/// A whole page: `body` inside the console's frame, with the language links.
pub fn page(lang: Lang, title: &str, body: &str) -> String {
    let w = lang.words();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <title>{} · {}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #999;padding:4px 8px}}.down,.stuck-money{{color:#b00}}\
         .stuck,.oos{{color:#a60}}.online{{color:#070}}</style></head><body>\
         <p><a href=\"?lang=zh\">中文</a> | <a href=\"?lang=en\">English</a></p>\
         <h1>{}</h1>{body}</body></html>",
        lang.code(),
        esc(title),
        w.title,
        esc(title)
    );
    out
}
